"""CheckpointManager: completeness marker, fallback past damaged steps, rename-aside re-save, stale folders of
killed saves, best marker only on a complete checkpoint; and a training run killed (SIGKILL) mid-save resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verl.trainer.checkpoint import MARKER, CheckpointManager

REPO = Path(__file__).resolve().parents[2]


def save(manager: CheckpointManager, step: int, payload: str = "weights") -> Path:
    tmp = manager.begin(step)
    (tmp / "actor").mkdir()
    (tmp / "actor" / "shard.pt").write_text(f"{payload} of step {step}")
    return manager.commit(step, tmp, {"global_step": step})


def test_latest_falls_back_to_the_newest_complete_step_when_the_latest_is_damaged(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    for step in (1, 2, 3):
        save(manager, step)
    assert manager.latest() == manager.step_dir(3)
    (manager.step_dir(3) / "actor" / "shard.pt").write_text("trunc")  # a shard cut short
    with pytest.warns(UserWarning, match="tracker.json names step 3"):
        assert manager.latest() == manager.step_dir(2)
    (manager.step_dir(2) / "actor" / "shard.pt").unlink()  # a shard missing
    with pytest.warns(UserWarning, match="newest complete step 1"):
        assert manager.latest() == manager.step_dir(1)
    (manager.step_dir(1) / MARKER).unlink()  # never finished
    with pytest.warns(UserWarning, match="no complete checkpoint"):
        assert manager.latest() is None


def test_resave_of_a_step_keeps_the_old_copy_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    manager = CheckpointManager(str(tmp_path))
    save(manager, 2, "old")
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".tmp") and Path(dst) == manager.step_dir(2):
            raise OSError("disk full")  # the rename of the new copy fails
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save(manager, 2, "new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert manager.latest() == manager.step_dir(2)
    assert (manager.step_dir(2) / "actor" / "shard.pt").read_text() == "old of step 2"
    save(manager, 2, "new")
    assert (manager.step_dir(2) / "actor" / "shard.pt").read_text() == "new of step 2"
    assert sorted(p.name for p in manager.root.iterdir()) == ["global_step_2", "tracker.json"]


def test_stale_folders_of_killed_saves_are_cleaned_at_the_next_save(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    save(manager, 1)
    (manager.root / "global_step_2.tmp" / "actor").mkdir(parents=True)  # killed while writing step 2
    (manager.root / "global_step_2.tmp" / "actor" / "shard.pt").write_text("half")
    save(manager, 1)  # killed between moving step 1 aside and renaming its new copy: only .old and .tmp left
    os.rename(manager.step_dir(1), manager.root / "global_step_1.old")
    save(manager, 9)
    os.rename(manager.step_dir(9), manager.root / "global_step_9.tmp")
    (manager.root / "global_step_9.tmp" / MARKER).unlink()
    CheckpointManager(str(tmp_path)).clean_stale()
    assert sorted(p.name for p in manager.root.iterdir()) == ["global_step_1", "tracker.json"]
    assert manager.is_complete(manager.step_dir(1))
    save(manager, 3)
    assert not list(manager.root.glob("*.tmp")) and not list(manager.root.glob("*.old"))


def test_best_marker_needs_a_complete_checkpoint(tmp_path):
    manager = CheckpointManager(str(tmp_path), save_limit=1)
    with pytest.raises(ValueError, match="global_step_4 is not a complete checkpoint"):
        manager.mark_best(4, {"score": 1.0})
    assert "best_step" not in manager.tracker()
    save(manager, 4)
    manager.mark_best(4, {"score": 1.0})
    save(manager, 5)
    save(manager, 6)
    assert manager.tracker()["best_step"] == 4
    assert [s for s in manager.steps()] == [4, 6]  # the best survives retention
    manager.mark_best(6, {"score": 2.0})
    assert manager.steps() == [6]


def test_trainer_marks_best_only_after_its_checkpoint_is_complete(tmp_path, monkeypatch):
    from tests.engine_helpers import toy_overrides, write_toy_task
    from verl.eval.hook import BestCheckpointCriterion
    from verl.trainer import main as trainer_main
    from verl.trainer.config import PPOConfig
    from verl.utils.config import load_config
    from verl.utils.models import save_tiny_model_dir

    complete_when_marked = []
    original = CheckpointManager.mark_best

    def spy(self, step, metrics):
        complete_when_marked.append((step, self.is_complete(self.step_dir(step))))
        return original(self, step, metrics)

    monkeypatch.setattr(CheckpointManager, "mark_best", spy)
    scores = {1: 0.5, 2: 0.2}
    evaluator = lambda generator, step: {"val/score": scores[step]}  # noqa: E731
    criterion = BestCheckpointCriterion("val/score", "min")
    monkeypatch.setattr(trainer_main, "build_evaluator", lambda config: (evaluator, criterion))
    model = save_tiny_model_dir(tmp_path / "model")
    train, reward = write_toy_task(tmp_path / "task")
    overrides = {"trainer.max_steps": 2, "trainer.val_freq": 1, "trainer.save_freq": -1}
    trainer_main.run(load_config(PPOConfig, toy_overrides(model, train, reward, str(tmp_path / "out"), **overrides)))
    assert complete_when_marked == [(1, True), (2, True)]


KILLED_RUN = """
import functools, sys, time
from pathlib import Path
from verl.trainer.config import PPOConfig
from verl.trainer.main import run
from verl.utils.config import load_config
from verl.workers.fsdp_worker import FSDPWorker

real_save = FSDPWorker.save_checkpoint

@functools.wraps(real_save)  # keeps the @register dispatch attributes
def save_then_hang(self, path):
    real_save(self, path)
    if "global_step_2.tmp" in path:  # step 2's shards are written, the save is not committed yet
        Path(sys.argv[1]).write_text("saving")
        time.sleep(600)

FSDPWorker.save_checkpoint = save_then_hang
run(load_config(PPOConfig, sys.argv[2:]))
"""


def test_run_killed_in_the_middle_of_a_save_resumes_from_the_last_complete_step(tmp_path, monkeypatch):
    from tests.engine_helpers import toy_overrides, write_toy_task
    from verl.trainer import ray_trainer
    from verl.trainer.config import PPOConfig
    from verl.trainer.main import run
    from verl.utils.config import load_config
    from verl.utils.models import save_tiny_model_dir

    model = save_tiny_model_dir(tmp_path / "model")
    train, reward = write_toy_task(tmp_path / "task")
    args = toy_overrides(
        model, train, reward, str(tmp_path / "out"), **{"trainer.max_steps": 3, "trainer.save_freq": 1}
    )
    script, ready = tmp_path / "killed_run.py", tmp_path / "saving"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(ready), *args], cwd=REPO, env=env)
    try:
        deadline = time.time() + 300
        while not ready.exists():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before reaching the save"
            assert time.time() < deadline, "the run did not reach step 2's save within 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    checkpoints = tmp_path / "out" / "rebo" / "checkpoints"
    assert (checkpoints / "global_step_2.tmp").is_dir() and not (checkpoints / "global_step_2").exists()

    steps = []
    original = ray_trainer.RayPPOTrainer.train_step

    def recording(self, indices):
        steps.append((self.global_step + 1, (checkpoints / "global_step_2.tmp").exists()))
        return original(self, indices)

    monkeypatch.setattr(ray_trainer.RayPPOTrainer, "train_step", recording)
    run(load_config(PPOConfig, args))  # the same command again
    assert steps == [(2, False), (3, False)]  # resumed after step 1; the killed save's folder cleaned at start
    assert sorted(p.name for p in checkpoints.iterdir()) == ["global_step_2", "global_step_3", "tracker.json"]
    assert json.loads((checkpoints / "tracker.json").read_text())["latest_step"] == 3
