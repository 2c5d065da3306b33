"""RS.runner (run_rwku.sh / run_muse.sh): profiles, the overrides it passes, and the RWKU runner end to end.

The end-to-end tests run ``bash run_rwku.sh --smoke`` on a tiny random model and the shared RWKU target 1
(every stage: base, rs, rebo, baselines, eval, table), then rerun it (nothing is trained again), then kill a
ReBO run after its first checkpoint and rerun (it resumes and finishes).
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from RS.config import RSConfig
from RS.runner import SMOKE, make_profile, retarget
from verl.trainer.config import PPOConfig
from verl.utils.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_cpu_profile_uses_smollm2_configs_without_utility_and_ga_npo():
    cpu = make_profile("rwku", 0)
    assert cpu.name == "cpu" and cpu.model == "smollm2" and "utility" not in cpu.suites.split(",")
    assert cpu.baselines == "ga,npo" and "smollm2" in cpu.rs_config and "smollm2" in cpu.rebo_config
    assert "trainer.n_gpus_per_node=0" in cpu.placement
    gpu = make_profile("rwku", 4)
    assert gpu.name == "gpu" and "utility" in gpu.suites.split(",") and "trainer.n_gpus_per_node=4" in gpu.placement
    assert {"ga", "npo", "rt", "dpo", "icu"} <= set(gpu.baselines.split(","))
    assert "icu" not in make_profile("muse", 4).baselines.split(",")  # ICU's instruction names an RWKU target


@pytest.mark.parametrize("benchmark", ["rwku", "muse"])
@pytest.mark.parametrize("gpus", [0, 4])
def test_profile_configs_load_with_the_runner_and_smoke_overrides(benchmark, gpus):
    profile = make_profile(benchmark, gpus)
    folders = [REPO / "data/rwku/Target/2_Confucius"]
    rs = [f"config={REPO / profile.rs_config}", *profile.placement, *SMOKE["rs"]]
    rs += retarget(profile.rs_config, folders, ["data.train_files", "data.retain_files"])
    cfg = load_config(RSConfig, rs)
    assert cfg.trainer.max_steps == 2 and "2_Confucius" in cfg.data.train_files
    rebo = [f"config={REPO / profile.rebo_config}", *profile.placement, *SMOKE["rebo"], "trainer.export_hf=true"]
    cfg = load_config(PPOConfig, rebo)
    assert cfg.trainer.max_steps == 2 and cfg.trainer.save_freq == 1


def test_retarget_points_every_file_at_each_target_folder(tmp_path):
    folders = [tmp_path / "1_A", tmp_path / "2_B"]
    (overrides,) = retarget("examples/rs_llama3.yaml", folders, ["data.train_files", "data.retain_files"])
    assert overrides == f"data.train_files={folders[0]}/reject_target.json,{folders[1]}/reject_target.json"


def test_unknown_stage_or_baseline_is_a_one_line_error(tmp_path):
    def run(*args):
        return subprocess.run(
            ["bash", str(REPO / "run_rwku.sh"), "--out", str(tmp_path), *args],
            capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=120,
        )  # fmt: skip

    bad_stage = run("--stages", "rs,rebbo")
    assert bad_stage.returncode == 2 and "unknown ['rebbo']" in bad_stage.stderr
    bad_method = run("--stages", "baselines", "--baselines", "gaa", "--data-dir", str(REPO / "nowhere"))
    assert bad_method.returncode != 0 and bad_method.stderr.strip().splitlines()[-1].startswith("error:")


@pytest.mark.parametrize("script", ["run_rwku.sh", "run_muse.sh"])
def test_runner_help_lists_the_stages(script):
    out = subprocess.run(["bash", str(REPO / script), "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "base,synth,rs,rebo,baselines,eval,table" in out.stdout and "--smoke" in out.stdout


# ----------------------------------------------------------------------------- end to end (RWKU, smoke)
def runner(out: Path, model_dir: str, data: Path, *extra: str, background: bool = False):
    argv = ["bash", str(REPO / "run_rwku.sh"), "--model", f"tiny:{model_dir}", "--targets", "1"]
    argv += ["--data-dir", str(data), "--out", str(out), "--smoke", *extra]
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if background:
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_model_dir, shared_data):
    out = tmp_path_factory.mktemp("rwku_smoke")
    return out, runner(out, tiny_model_dir, shared_data / "rwku")


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {row[next(iter(row))]: row for row in rows}


def test_smoke_run_writes_table1_with_every_model_and_the_json_numbers(smoke_run):
    out, _ = smoke_run
    table = read_csv(out / "tables" / "rwku_table1.csv")
    expected = {"before", "RULE/RS-epoch1", "RULE/RS-epoch1+ReBO", "GA/lr1e-05", "GA/lr3e-05"}
    expected |= {"NPO/lr1e-05", "NPO/lr3e-05"}
    assert set(table) == expected
    for label, tag in [("before", "base"), ("RULE/RS-epoch1+ReBO", "rule_rs1"), ("NPO/lr3e-05", "npo_lr3e-05")]:
        metrics = json.loads((out / "eval" / tag / "1_Stephen_King.json").read_text())["metrics"]
        row = table[label]
        for column, key in [("F-All", "forget_all"), ("N-All", "neighbor_all"), ("F-FB", "forget_fb")]:
            assert float(row[column]) == pytest.approx(100 * metrics[key], abs=0.051), (label, column)
    for name in ("rule_naturalness.md", "pareto.png", "pareto_area.md"):
        assert (out / "tables" / name).stat().st_size > 0


def test_rerun_after_a_finished_run_trains_nothing(smoke_run, tiny_model_dir, shared_data):
    out, _ = smoke_run
    log = runner(out, tiny_model_dir, shared_data / "rwku")
    assert "-m RS.train" not in log and "-m verl.trainer.main" not in log and "-m verl.eval" not in log
    # base eval; rs + its eval; rebo + its eval; 2 baselines x 2 strengths, each trained + evaluated
    assert log.count("complete, skipped") == 1 + 2 + 2 + 2 * 2 * 2
    assert (out / "tables" / "rwku_table1.md").is_file()


def test_a_run_killed_during_rebo_resumes_and_finishes(smoke_run, tiny_model_dir, shared_data):
    out, _ = smoke_run
    rebo = out / "1_Stephen_King" / "rebo_rs1"
    os.rename(rebo, rebo.with_name("rebo_rs1.done"))
    proc = runner(out, tiny_model_dir, shared_data / "rwku", "--stages", "rebo", background=True)
    tracker = rebo / "checkpoints" / "tracker.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if tracker.is_file() and json.loads(tracker.read_text()).get("latest_step") == 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the ReBO stage ended before its first checkpoint could be seen"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (rebo / "final").exists()
    log = runner(out, tiny_model_dir, shared_data / "rwku", "--stages", "rebo")
    assert "resumed from" in log and "(step 1)" in log
    assert (rebo / "final" / "config.json").is_file()
    steps = [json.loads(line).get("step") for line in (rebo / "metrics.jsonl").read_text().splitlines()]
    assert 2 in steps


# ----------------------------------------------------------------------------- end to end (MUSE, embedded book)
def test_muse_smoke_run_teaches_the_embedded_book_and_writes_the_muse_table(tmp_path, tiny_model_dir):
    argv = ["bash", str(REPO / "run_muse.sh"), "--model", f"tiny:{tiny_model_dir}", "--out", str(tmp_path), "--smoke"]
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[teach the book]" in done.stdout and (tmp_path / "data" / "muse_book" / "teach.json").is_file()
    table = read_csv(tmp_path / "tables" / "muse_table.csv")
    from RS.baselines import read_strengths

    smoke_strengths = {f"{m.upper()}/{s.tag}" for m in ("ga", "npo") for s in read_strengths(m, "muse-cpu")[:2]}
    assert len(smoke_strengths) == 4  # the first two strengths of each YAML's muse-cpu sweep
    assert set(table) == {"before", "RULE/RS-epoch1", "RULE/RS-epoch1+ReBO"} | smoke_strengths
    result = json.loads((tmp_path / "eval" / "rule_rs1" / "muse_books.json").read_text())
    assert {"muse_verbmem", "muse_knowmem", "muse_privleak"} <= set(result["suites_run"])
    for column, key, scale in [("VerbMem-f", "muse_verbmem_f", 100), ("PrivLeak", "muse_privleak", 1)]:
        value = result["metrics"][key]  # PrivLeak is None (an empty cell) when the reference AUC is 0
        assert (
            table["RULE/RS-epoch1+ReBO"][column] == ""
            if value is None
            else float(table["RULE/RS-epoch1+ReBO"][column]) == pytest.approx(scale * value, abs=1e-3)
        )
    # PrivLeak's reference is the untaught model's AUC on the embedded book, not MUSE-Books' published one
    untaught = json.loads((tmp_path / "eval" / "untaught" / "muse_books.json").read_text())["metrics"]
    assert f"--privleak-auc-retrain {untaught['muse_privleak_auc']!r}" in done.stdout
    assert result["options"]["privleak_auc_retrain"] == pytest.approx(untaught["muse_privleak_auc"])
    before = json.loads((tmp_path / "eval" / "base" / "muse_books.json").read_text())
    assert before["model"] == "base" and str(tmp_path / "teach") in done.stdout
    assert (tmp_path / "tables" / "muse_pareto.png").stat().st_size > 0


@pytest.mark.parametrize("batch", [False, True])
def test_single_and_batch_target_plans(tmp_path, shared_data, batch):
    argv = ["bash", str(REPO / "run_rwku.sh"), "--model", "tiny:/nonexistent", "--targets", "1,2", "--dry-run"]
    argv += ["--data-dir", str(shared_data / "rwku"), "--out", str(tmp_path), *(["--batch"] if batch else [])]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    planned = [line for line in done.stdout.splitlines() if "would run:" in line]
    rs = [line for line in planned if "-m RS.train config=examples/rs_ul_smollm2.yaml" in line]
    rebo = [line for line in planned if "-m verl.trainer.main" in line]
    both = "1_Stephen_King/rl_rejection_with_fb_neighbor_target.json,"
    if batch:
        assert len(rs) == 1 and len(rebo) == 1 and both in rs[0] and "2_Confucius/rl_rejection" in rs[0]
        assert "evaluator.targets=1_Stephen_King,2_Confucius" in rebo[0]
        assert f"trainer.output_dir={tmp_path}/batch_2_targets" in rs[0]
    else:
        assert len(rs) == 2 and len(rebo) == 2 and not any(both in line for line in rs)
        assert f"trainer.output_dir={tmp_path}/2_Confucius" in rs[1]
    baselines = [line for line in planned if "examples/baselines/" in line]
    assert len(baselines) == (1 if batch else 2) * 2 * 3  # GA and NPO at 3 strengths each
    evaluations = [line for line in planned if "-m verl.eval " in line]
    assert evaluations and all("--refusal-detector strict" in line for line in evaluations)  # the runner's default
    assert not (tmp_path / "tables").exists()


class RecordingPipeline:
    """The two Pipeline calls run_baselines makes, recorded (no process is started)."""

    def __init__(self):
        self.trained, self.evaluated = [], []

    def train_rs(self, stage, run_dir, overrides, epochs=()):
        self.trained.append((run_dir, list(overrides), list(epochs)))

    def evaluate(self, label, tag, model, **kwargs):
        self.evaluated.append((label, tag, model))

    def export_of(self, run_dir):
        return run_dir / "epoch_LAST"


@pytest.mark.parametrize("smoke", [False, True])
def test_points_epochs_trains_once_and_evaluates_every_epoch(tmp_path, monkeypatch, smoke):
    """A strength with ``points: epochs`` is one run that saves every epoch, each epoch one evaluated point."""
    import RS.runner as runner
    from RS.baselines import Strength

    strength = Strength({"optim.lr": 1e-4}, {"trainer.epochs": 3}, every_epoch=True)
    monkeypatch.setattr(runner, "read_strengths", lambda method, profile: [strength])
    profile = make_profile("rwku", 0)
    profile.baselines = "ga"
    args = type("Args", (), {"smoke": smoke, "retain_files": ""})()
    pipe = RecordingPipeline()
    evaluate = {"benchmark": "rwku", "names": ["t"], "suites": ["forget"], "args": []}
    runner.run_baselines(args, profile, {"baselines", "eval"}, pipe, tmp_path, "m", [tmp_path], evaluate,
                         SMOKE if smoke else {})  # fmt: skip
    ((run_dir, overrides, epochs),) = pipe.trained
    assert run_dir == tmp_path / "baselines" / "ga_lr0.0001" and "trainer.save_every_epoch=true" in overrides
    assert epochs == ([1] if smoke else [1, 2, 3])
    assert pipe.evaluated == [
        (f"GA/lr0.0001_epoch{e}", f"ga_lr0.0001_epoch{e}", run_dir / f"epoch_{e}") for e in epochs
    ]
