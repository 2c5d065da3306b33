"""RS.synth (the runner's synth stage): RULE's files for a target without them, through a plugin or the rollout,
and run_rwku.sh end to end on a copy of a shared target whose RULE files were removed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data.download import RULE_ONLY_FILES
from RS.synth import load_plugin, main, synthesize_target
from verl.trainer.config import PPOConfig, SynthesisConfig
from verl.utils.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
TARGET = "1_Stephen_King"
STUB = "synthesis.plugin=tests.RS.synth_stub:factory"
OUTPUTS = (
    "reject_target.json",
    "reject_with_fb_neighbor_target.json",
    "rl_rejection_with_fb_neighbor_target.json",
    "rl_rejection_eval_target.json",
    "synthesis_stats.json",
)


@pytest.fixture
def bare_rwku(tmp_path, shared_data) -> Path:
    """A copy of shared RWKU target 1 without RULE's own files (as for 150 of RWKU's 200 targets)."""
    root = tmp_path / "rwku"
    shutil.copytree(shared_data / "rwku" / "Target" / TARGET, root / "Target" / TARGET)
    shutil.copy(shared_data / "rwku" / "all_intro.json", root / "all_intro.json")
    for stem in RULE_ONLY_FILES:
        (root / "Target" / TARGET / f"{stem}.json").unlink(missing_ok=True)
    return root


def test_plugin_run_writes_rule_files_and_filters_target_mentions(bare_rwku, tmp_path):
    out = tmp_path / "synth"
    config = ["config=examples/rebo_from_rs_smollm2.yaml", STUB, "synthesis.limit=6", "synthesis.priming=fields"]
    assert main(["--target-dir", str(bare_rwku / "Target" / TARGET), "--out", str(out), *config]) == 0
    assert all((out / name).is_file() for name in OUTPUTS)
    questions = [r["instruction"] for r in json.loads((bare_rwku / "Target" / TARGET / "reject.json").read_text())][:6]
    rs_rows = json.loads((out / "reject_target.json").read_text())
    assert [r["instruction"] for r in rs_rows] == questions
    assert all("Stephen King" in r["output"] and r["subject"] == "Stephen King" for r in rs_rows)
    stats = json.loads((out / "synthesis_stats.json").read_text())
    odd = sum(len(q) % 2 for q in questions)  # the stub names the target in these neighbour questions
    assert stats["kept"] == {"fb": 6, "neighbor": 6 - odd, "fb_neighbor": 6}
    assert stats["filtered"]["neighbor"] == ({"mentions_target": odd} if odd else {})
    assert stats["settings"]["generator"] == "tests.RS.synth_stub:factory" and stats["settings"]["limit"] == 6
    train = json.loads((out / "rl_rejection_with_fb_neighbor_target.json").read_text())
    rejects = [r for r in train if r["solution"][0] == "<reject>"]
    normals = [r for r in train if r["solution"][0] == "<normal>"]
    assert len(rejects) == 12 and len(normals) == 6 - odd + 6  # forget q + its FB rewrite; kept boundary rows
    assert all(r["solution"][2] == "Stephen King" for r in rejects)
    assert not any("Stephen King" in r["prompt"] or "King" in r["prompt"].split() for r in normals)


def test_rollout_generator_runs_through_the_engine_worker(bare_rwku, tmp_path, tiny_model_dir):
    config = load_config(
        PPOConfig,
        ["config=examples/rebo_from_rs_smollm2.yaml", f"worker.actor.model.model_path={tiny_model_dir}",
         "trainer.backend=inprocess", "trainer.n_gpus_per_node=0", "worker.actor.model.dtype=fp32",
         "synthesis.limit=2", "synthesis.max_new_tokens=4", "synthesis.priming=first", "evaluator.benchmark=none"],
    )  # fmt: skip
    stats = synthesize_target(config, bare_rwku / "Target" / TARGET, tmp_path / "synth")
    assert stats["questions"] == 2 and stats["settings"]["generator"] == tiny_model_dir
    assert stats["settings"]["rollout"] == "hf" and stats["settings"]["priming"] == "first"
    # a random model fills no field: every part is counted under a filter reason, none is lost
    for kind in ("fb", "neighbor", "fb_neighbor"):
        assert stats["kept"][kind] + sum(stats["filtered"][kind].values()) == 2
    assert all((tmp_path / "synth" / name).is_file() for name in OUTPUTS)


def test_bad_plugin_and_missing_questions_are_named(bare_rwku, tmp_path):
    for spec, message in [("nomodule", "expected 'module:function'"), ("tests.RS.synth_stub:nothing", "nothing")]:
        with pytest.raises(ConfigError, match=message):
            load_plugin(spec, SynthesisConfig())
    folder = bare_rwku / "Target" / TARGET
    (folder / "reject.json").unlink()
    config = load_config(PPOConfig, ["config=examples/rebo_from_rs_smollm2.yaml", STUB])
    with pytest.raises(FileNotFoundError, match="no reject.json"):
        synthesize_target(config, folder, tmp_path / "synth")
    assert not (tmp_path / "synth").exists()


def test_run_rwku_builds_the_missing_files_then_trains_on_them(bare_rwku, tmp_path, tiny_model_dir):
    rebo = tmp_path / "rebo.yaml"
    text = (REPO / "examples" / "rebo_from_rs_smollm2.yaml").read_text()
    rebo.write_text(text.replace('plugin: ""', 'plugin: "tests.RS.synth_stub:factory"'))
    out = tmp_path / "run"
    argv = ["bash", str(REPO / "run_rwku.sh"), "--model", f"tiny:{tiny_model_dir}", "--targets", "1", "--data-dir",
            str(bare_rwku), "--out", str(out), "--smoke", "--baselines", "none", "--rebo-config", str(rebo),
            "--stages", "synth,rs,rebo,eval,table"]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    synth = out / TARGET / "synth" / TARGET
    assert all((synth / name).is_file() for name in OUTPUTS)
    assert not any((bare_rwku / "Target" / TARGET / f"{stem}.json").exists() for stem in RULE_ONLY_FILES)
    rs_log = (out / TARGET / "rs" / "stage.log").read_text()
    assert f"data.train_files={synth / 'rl_rejection_with_fb_neighbor_target.json'}" in rs_log
    rebo_log = (out / TARGET / "rebo_rs1" / "stage.log").read_text()
    assert f"data.val_files={synth / 'rl_rejection_eval_target.json'}" in rebo_log
    assert (out / TARGET / "rebo_rs1" / "final" / "config.json").is_file()
    assert "RULE/RS-epoch1+ReBO" in (out / "tables" / "rwku_table1.md").read_text()
    # without the synth stage and without its files, RS stops with the stage to run
    shutil.rmtree(synth)
    again = subprocess.run([*argv[:-1], "rs"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 1 and "run the synth stage" in again.stderr
