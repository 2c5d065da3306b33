"""run_rwku.sh / run_muse.sh: every key=value they pass to the trainers is a valid config key and value.

The runners need a GPU to run, so CI checks their commands statically: each ``-m RS.train`` and
``-m verl.trainer.main`` invocation is parsed (shell variables replaced by sample values) and loaded with
the trainer's own config loader, which rejects unknown keys, wrong types and bad choices.
"""

import re
import shlex
from pathlib import Path

import pytest

from RS.config import RSConfig
from verl.trainer.config import PPOConfig
from verl.utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE_VALUES = {"GPUS": "4", "epoch": "2", "RS_CONFIG": "examples/rs_llama3.yaml"}
SAMPLE_VALUES["REBO_CONFIG"] = "examples/rebo_llama3.yaml"
TRAINERS = {"RS.train": RSConfig, "verl.trainer.main": PPOConfig}


def invocations(script: Path) -> list[tuple[str, list[str]]]:
    text = script.read_text().replace("\\\n", " ")
    text = re.sub(r"\$\(([^()]|\([^()]*\))*\)", "x", text)  # command substitutions -> a sample word
    text = re.sub(r"\$\{?(\w+)\}?", lambda m: SAMPLE_VALUES.get(m.group(1), "x"), text)
    found = []
    for line in text.splitlines():
        match = re.search(r"-m (RS\.train|verl\.trainer\.main) (.*)", line)
        if match:
            found.append((match.group(1), shlex.split(match.group(2))))
    return found


@pytest.mark.parametrize("script", ["run_rwku.sh", "run_muse.sh"])
def test_runner_overrides_are_valid_config(script):
    calls = invocations(REPO / script)
    assert {module for module, _ in calls} == set(TRAINERS), calls
    for module, args in calls:
        config = next(a.split("=", 1)[1] for a in args if a.startswith("config="))
        overrides = [a for a in args if not a.startswith("config=")]
        assert all("=" in a for a in overrides), overrides
        cfg = load_config(TRAINERS[module], [f"config={REPO / config}", *overrides])
        assert cfg is not None


def test_a_bad_runner_key_would_be_caught():
    with pytest.raises(Exception, match="data.prompt_fromat"):
        load_config(PPOConfig, [f"config={REPO / 'examples/rebo_llama3.yaml'}", "data.prompt_fromat=muse"])


@pytest.mark.parametrize("path", sorted(REPO.glob("examples/rebo_*.yaml")), ids=lambda p: p.name)
def test_rebo_example_configs_load(path):
    cfg = load_config(PPOConfig, [f"config={path}"])
    assert cfg.algorithm.adv_estimator and cfg.worker.rollout.n >= 1
