"""run_rwku.sh / run_muse.sh stay thin: each hands every argument to ``python -m RS.runner`` (tested in
tests/RS/test_runner.py); the example configs they and users start from load with the trainers' own loader."""

from pathlib import Path

import pytest

from verl.trainer.config import PPOConfig
from verl.utils.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script,benchmark", [("run_rwku.sh", "rwku"), ("run_muse.sh", "muse")])
def test_runner_scripts_hand_everything_to_the_python_runner(script, benchmark):
    lines = [line for line in (REPO / script).read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == f'exec "$PY" -m RS.runner {benchmark} "$@"'
    assert len(lines) <= 5, "keep the stage logic in RS/runner.py, not in the shell script"


def test_a_bad_runner_key_would_be_caught():
    with pytest.raises(Exception, match="data.prompt_fromat"):
        load_config(PPOConfig, [f"config={REPO / 'examples/rebo_llama3.yaml'}", "data.prompt_fromat=muse"])


@pytest.mark.parametrize("path", sorted(REPO.glob("examples/rebo_*.yaml")), ids=lambda p: p.name)
def test_rebo_example_configs_load(path):
    cfg = load_config(PPOConfig, [f"config={path}"])
    assert cfg.algorithm.adv_estimator and cfg.worker.rollout.n >= 1
