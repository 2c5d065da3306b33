"""The command line: config errors are one line naming the key, the example configs load, scripts run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from RS.config import RSConfig
from RS.losses import get_loss
from RS.train import main
from RS.trainer import epoch_batches
from verl.utils.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
BASE = ["model.model_path=smollm2", "data.train_files=rows.json"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["loss.name=nope"], "loss: unknown unlearning loss 'nope'; choose one of: dpo, ga, gd, idkdpo, npo"),
        (
            ["loss.name=npo", "loss.params={betta: 1}"],
            "unknown parameter 'betta' for unlearning loss 'npo'; allowed: beta",
        ),
        (["trainer.epoch=3"], "unknown config key 'trainer.epoch'"),
        (["data.format=csv"], "data.format='csv' is not allowed"),
        (["data.train_files="], "data.train_files is empty"),
        (["model.model_path="], "model.model_path is empty"),
        (["trainer.backend=ray", "trainer.n_workers=3"], "trainer.batch_size=8 must divide by the 3 workers"),
        (["trainer.n_workers=2"], "trainer.backend=inprocess runs one worker; got a world size of 2"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
        load_config(RSConfig, BASE + argv)
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="config error: "):
        main(BASE + argv)


def test_help_lists_losses_and_keys(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert "losses: dpo, ga, gd, idkdpo, npo, npo_gd, rt, sft, sft_retain, sft_retain_ul, simnpo" in out
    assert "trainer.micro_batch_size_per_device = 8" in out and "loss.params = {}" in out


def load_example(path: Path):
    return load_config(RSConfig, [f"config={path}"])


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "examples" / "baselines").glob("*.yaml")) + sorted(ROOT.glob("examples/rs_*.yaml")),
    ids=lambda p: p.name,
)
def test_example_configs_load(path):
    cfg = load_example(path)
    get_loss(cfg.loss.name).bind(cfg.loss.params)
    # RULE's MUSE RS rows (10 ICL shots + a question) are cut at 640 tokens, RWKU's at 512
    assert cfg.data.max_length == (640 if cfg.data.prompt_format == "muse" else 512)
    assert cfg.optim.warmup_style == "cosine"
    if path.parent.name == "baselines":
        assert cfg.loss.name == path.stem and cfg.optim.lr_warmup_steps == 20


def test_rs_llama3_is_the_paper_setting():
    cfg = load_example(ROOT / "examples" / "rs_llama3.yaml")
    assert (cfg.optim.lr, cfg.optim.lr_warmup_steps, cfg.trainer.epochs, cfg.trainer.batch_size) == (4e-7, 20, 3, 8)
    assert cfg.loss.name == "sft" and not cfg.data.train_on_prompt and cfg.model.lora.rank == 0
    # 300 rows, batch 8 -> 38 steps per epoch (checkpoint-38/76/114 in the original), none dropped
    batches = epoch_batches(300, cfg.trainer.batch_size, cfg.world_size(), 0, 0, True)
    assert len(batches) == math.ceil(300 / 8) == 38 and sum(map(len, batches)) == 300
    assert sorted(i for b in batches for i in b) == list(range(300))
    npo = load_example(ROOT / "examples" / "baselines" / "npo.yaml")
    assert (npo.loss.params["beta"], npo.optim.lr, npo.trainer.batch_size) == (0.2, 2e-6, 16)


def test_last_batch_is_cut_to_a_multiple_of_the_workers():
    batches = epoch_batches(13, 4, 2, seed=1, epoch=0, shuffle=True)
    assert [len(b) for b in batches] == [4, 4, 4]  # the 13th row cannot be split over 2 workers
    assert epoch_batches(13, 4, 1, 1, 0, True)[-1] != []


def run_script(args, env_extra, cwd=ROOT):
    env = {**os.environ, "PYTHON": sys.executable, **env_extra}
    return subprocess.run(["bash", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_rs_script_runs_a_batch_of_targets(tmp_path, tiny_model_dir, shared_data):
    out = tmp_path / "rs"
    args = [
        "RS/scripts/full/run_rt_epoch_target.sh",
        "--targets",
        "1-2",
        "--data-dir",
        str(shared_data / "rwku"),
        "--out",
        str(out),
        "--batch",
        "--config",
        "examples/rs_smollm2.yaml",
        "data.max_samples=3",
        "trainer.epochs=1",
        "trainer.batch_size=2",
        "trainer.progress=false",
        "data.max_length=64",
    ]
    result = run_script(args, {"MODEL": tiny_model_dir})
    assert result.returncode == 0, result.stderr[-2000:]
    run = out / "batch_1-2"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["exports"] == [str(run / "epoch_1")] and summary["steps"] == 3  # 3 rows from each target
    assert (run / "epoch_1" / "config.json").is_file()
    config = json.loads((run / "rs_config.json").read_text())
    assert config["data"]["train_files"].count("reject_target.json") == 2


def test_baseline_script_rejects_unknown_methods_and_missing_retain():
    result = run_script(["RS/scripts/run_baseline.sh", "foo"], {})
    assert result.returncode == 2 and "unknown METHOD 'foo'" in result.stderr
    result = run_script(["RS/scripts/run_baseline.sh", "npo_gd"], {})
    assert result.returncode == 2 and "npo_gd needs retain rows" in result.stderr
