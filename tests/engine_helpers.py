"""Shared helpers for engine tests: a tiny model folder, a toy rule reward and a toy prompt file."""

from __future__ import annotations

import json
from pathlib import Path

TOY_REWARD = """
def main(response, ground_truth, target="a"):
    chars = [c for c in response if not c.isspace()]
    frac = sum(c == target for c in chars) / max(len(chars), 1)
    return {"overall": frac, "target_fraction": frac}
"""


def write_toy_task(root: Path, rows: int = 32) -> tuple[str, str]:
    """A prompt file and a reward plug-in: reward = fraction of 'a' characters in the response."""
    root.mkdir(parents=True, exist_ok=True)
    data = [{"prompt": f"Write the letter a, please ({i}).", "solution": ["a"]} for i in range(rows)]
    (root / "train.json").write_text(json.dumps(data))
    (root / "reward.py").write_text(TOY_REWARD)
    return str(root / "train.json"), f"{root / 'reward.py'}:main"


def toy_overrides(model_dir: str, train_file: str, reward: str, out_dir: str, **extra) -> list[str]:
    base = {
        "data.train_files": train_file,
        "data.max_prompt_length": 64,
        "data.max_response_length": 12,
        "data.rollout_batch_size": 8,
        "worker.actor.model.model_path": model_dir,
        "worker.actor.global_batch_size": 8,
        "worker.actor.micro_batch_size_per_device_for_update": 16,
        "worker.actor.optim.lr": 2e-2,
        "worker.actor.optim.weight_decay": 0.0,
        "worker.rollout.n": 4,
        "worker.reward.reward_function": reward,
        "algorithm.kl_coef": 0.0,
        "trainer.output_dir": out_dir,
        "trainer.logger": "[jsonl]",
        "trainer.export_hf": False,
        "trainer.backend": "inprocess",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
