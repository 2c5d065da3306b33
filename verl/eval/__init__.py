"""Benchmark evaluation (RWKU, MUSE-Books) over a model-agnostic :class:`Generator`.

One package serves RS, the baselines, ReBO in-training validation and ``python3 -m verl.eval``:

    from verl.eval import HFGenerator, run_suites
    generator = HFGenerator.from_pretrained("smollm2")
    result = run_suites(generator, "rwku", "data/rwku", target="1", suites=["forget", "neighbor"])
    result["metrics"]["forget_all"]

Modules: generator (backends), prompts (RWKU templates), datasets (file reading), rwku / mia / utility /
muse / naturalness / attacks (suites; attacks with relearn, attack_config, attack_table), suites (registry +
run_suites), report (JSON + tables), collect (many models' tables), hook (trainer side),
judge (the refusal judge on a generator; refusal detectors by name).
Heavy libraries (torch, transformers) are imported only when a backend runs.
"""

from verl.eval.generator import CallableGenerator, Generator, HFGenerator, SamplingParams
from verl.eval.suites import EVALUATORS, EvalOptions, load_builtin_suites, run_suites, suite_names

load_builtin_suites()

__all__ = [
    "EVALUATORS",
    "CallableGenerator",
    "EvalOptions",
    "Generator",
    "HFGenerator",
    "SamplingParams",
    "run_suites",
    "suite_names",
]
