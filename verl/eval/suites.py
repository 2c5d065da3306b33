"""Suite registry and the single entry point :func:`run_suites` used by RS, baselines, ReBO and the CLI.

A *suite* is a named evaluation (``EVALUATORS.get("forget")``) that reads its files for one target, asks
the :class:`~verl.eval.generator.Generator` for generations or log-probs, and returns
``{"metrics": {flat name: float}, "records": [per-probe dicts]}``. Umbrella suites (``"utility"``) expand
into parts; ``requires`` names suites whose outputs a suite reads (``"naturalness"`` reads the forget and
neighbor generations), which :func:`run_suites` runs first when they were not asked for.

RWKU suites: forget, neighbor, boundary, mia, utility (= mmlu, bbh, truthfulqa, triviaqa, fluency),
naturalness, attacks (prefill, multi-turn, quantization, relearning, knowledge probe; ``verl.eval.attacks``). MUSE suites: muse_verbmem, muse_knowmem, muse_privleak, muse_naturalness.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from verl.eval.attack_config import AttackConfig
from verl.eval.generator import Generator, SamplingParams
from verl.utils.registry import Registry
from verl.workers.reward.refusal import EVAL_DEFAULT_DETECTOR, Detector, check_detector_name

BENCHMARKS = ("rwku", "muse")
_BUILTIN_MODULES = (
    "verl.eval.rwku", "verl.eval.mia", "verl.eval.utility", "verl.eval.muse", "verl.eval.naturalness",
    "verl.eval.attacks",
)  # fmt: skip


@dataclass
class EvalOptions:
    """Switches shared by all suites.

    icu: prepend RWKU's ICU instruction to every probe (in-context unlearning baseline).
    max_probes: evaluate only the first N records of every file (debugging).
    bbh_legacy_char_em: reproduce RWKU's BBH EM over the answer's characters (the paper's numbers).
    fluency_tokenizer: "regex" (offline approximation), "treebank" or "nltk" (see text_metrics).
    rwku_newline_stop: stop forget/neighbor generations at "\\n" (RWKU's intended stop tokens).
    knowmem_icl_type: "default" (MUSE: forget shots for forget QA, retain shots for retain QA) or "train".
    muse_corpus: "books" or "news" (selects the PrivLeak retrain AUC).
    privleak_auc_key / privleak_auc_retrain: AUC entry used for PrivLeak and its retrained-model reference
        (None = MUSE's published value for the corpus and key).
    generation_overrides: SamplingParams fields replacing every suite's defaults (e.g. RULE's in-training
        validation samples with {"temperature": 0.95, "top_p": 0.7, "top_k": 50}); "n" is not allowed.
    max_new_tokens_cap: upper bound on every suite's max_new_tokens (debugging / smoke runs only).
    skip_missing: a suite whose file is missing is skipped (reason in the result's "skipped") instead of
        raising FileNotFoundError, and so are suites requiring it (e.g. utility files exist only for some targets).
    attack: settings of the ``attacks`` suite, the fields of :class:`verl.eval.attack_config.AttackConfig`
        (e.g. ``{"attacks": "prefill,quant4", "relearn_steps": 4}``); checked here.
    refusal_detector: the detector behind every refusal figure (naturalness): "strict" (default), "rule"
        (RULE's regex, what the rewards use) or "judge" (a chat model, ``judge_model``); see
        verl/workers/reward/refusal.py. Recorded in every result JSON (its "options" and "refusal_detector").
    judge_model: the judge's HF chat model (folder or hub id) for refusal_detector="judge".
    """

    icu: bool = False
    max_probes: Optional[int] = None
    bbh_legacy_char_em: bool = False
    fluency_tokenizer: str = "regex"
    rwku_newline_stop: bool = True
    knowmem_icl_type: str = "default"
    muse_corpus: str = "books"
    privleak_auc_key: str = "forget_holdout_Min-40%"
    privleak_auc_retrain: Optional[float] = None
    generation_overrides: dict = field(default_factory=dict)
    max_new_tokens_cap: Optional[int] = None
    skip_missing: bool = False
    attack: dict = field(default_factory=dict)
    refusal_detector: str = EVAL_DEFAULT_DETECTOR
    judge_model: Optional[str] = None

    def __post_init__(self) -> None:
        check_detector_name(self.refusal_detector, "refusal_detector")
        if (self.refusal_detector == "judge") != bool(self.judge_model):
            raise ValueError(
                "judge_model is needed with refusal_detector='judge' and only then; got "
                f"refusal_detector={self.refusal_detector!r}, judge_model={self.judge_model!r}"
            )
        if self.max_probes is not None and self.max_probes < 1:
            raise ValueError(f"max_probes must be >= 1 or None, got {self.max_probes}")
        if self.max_new_tokens_cap is not None and self.max_new_tokens_cap < 1:
            raise ValueError(f"max_new_tokens_cap must be >= 1 or None, got {self.max_new_tokens_cap}")
        if self.knowmem_icl_type not in ("default", "train"):
            raise ValueError(f"knowmem_icl_type must be 'default' or 'train', got {self.knowmem_icl_type!r}")
        allowed = {f.name for f in dataclasses.fields(SamplingParams)} - {"n"}
        unknown = set(self.generation_overrides) - allowed
        if unknown:
            raise ValueError(f"unknown generation_overrides {sorted(unknown)}; allowed: {sorted(allowed)}")
        AttackConfig.from_mapping(self.attack)

    @classmethod
    def from_any(cls, options: Union[EvalOptions, Mapping[str, Any], None]) -> EvalOptions:
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(options) - names
        if unknown:
            raise ValueError(f"unknown eval option(s) {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**dict(options))

    def sampling(self, **defaults) -> SamplingParams:
        """A suite's default SamplingParams with :attr:`generation_overrides` and the token cap applied."""
        params = {**defaults, **self.generation_overrides}
        if self.max_new_tokens_cap is not None:
            params["max_new_tokens"] = min(
                params.get("max_new_tokens", self.max_new_tokens_cap), self.max_new_tokens_cap
            )
        return SamplingParams(**params)


@dataclass
class SuiteContext:
    """What a suite function receives. ``results`` holds the outputs of suites already run in this call."""

    generator: Generator
    benchmark: str
    data_dir: Path
    target: Any  # verl.utils.rwku_targets.Target for RWKU, None for MUSE
    options: EvalOptions
    results: dict = field(default_factory=dict)
    _detector: Optional[Detector] = field(default=None, repr=False)

    @property
    def refusal_detector(self) -> Detector:
        """The detector ``options.refusal_detector`` names (a judge model is loaded once per process)."""
        if self._detector is None:
            from verl.eval.judge import build_detector

            self._detector = build_detector(self.options.refusal_detector, self.options.judge_model)
        return self._detector

    @property
    def target_dir(self) -> Path:
        from verl.eval.datasets import rwku_target_dir

        return rwku_target_dir(self.data_dir, self.target.dirname)

    def icu_subject(self, record: Mapping) -> Optional[str]:
        """The subject for the ICU instruction (the record's ``subject``, else the target) or None when off."""
        if not self.options.icu:
            return None
        return record.get("subject") or (self.target.name if self.target is not None else "")


@dataclass(frozen=True)
class Suite:
    name: str
    benchmark: str
    run: Optional[Callable[[SuiteContext], dict]] = None
    parts: tuple = ()
    requires: tuple = ()
    description: str = ""


EVALUATORS: Registry[Suite] = Registry("evaluator")


def register_suite(name: str, benchmark: str, requires: Sequence[str] = (), description: str = ""):
    """Decorator: register ``fn(ctx) -> {"metrics", "records"}`` as suite ``name`` of ``benchmark``."""

    def decorator(fn: Callable[[SuiteContext], dict]) -> Callable[[SuiteContext], dict]:
        EVALUATORS.register(name)(Suite(name, benchmark, fn, requires=tuple(requires), description=description))
        return fn

    return decorator


def register_umbrella(name: str, benchmark: str, parts: Sequence[str], description: str = "") -> None:
    EVALUATORS.register(name)(Suite(name, benchmark, parts=tuple(parts), description=description))


def load_builtin_suites() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def suite_names(benchmark: Optional[str] = None) -> list[str]:
    load_builtin_suites()
    return [n for n in EVALUATORS.names() if benchmark is None or EVALUATORS.get(n).benchmark == benchmark]


def expand_suites(benchmark: str, suites: Sequence[str]) -> list[str]:
    """Umbrellas replaced by their parts, requirements added before their users, duplicates dropped."""
    valid = suite_names(benchmark)
    ordered: list[str] = []

    def add(name: str) -> None:
        if name not in valid:
            raise ValueError(f"unknown {benchmark} evaluation suite {name!r}; choose from: {', '.join(valid)}")
        suite = EVALUATORS.get(name)
        for part in suite.parts:
            add(part)
        for requirement in suite.requires:
            add(requirement)
        if suite.run is not None and name not in ordered:
            ordered.append(name)

    if isinstance(suites, str):
        suites = [s for s in suites.split(",") if s.strip()]
    if not suites:
        raise ValueError(f"no evaluation suite given; choose from: {', '.join(valid)}")
    for name in suites:
        add(name.strip())
    return ordered


def _resolve_target(benchmark: str, data_dir: Path, target):
    if benchmark == "muse":
        return None
    from verl.utils.rwku_targets import Target, select_targets

    if target is None:
        raise ValueError("RWKU evaluation needs a target (index, name, folder name or Target)")
    if isinstance(target, Target):
        return target
    selected = select_targets(target, data_dir)
    if len(selected) != 1:
        raise ValueError(f"run_suites evaluates one target at a time; {target!r} selects {len(selected)}")
    return selected[0]


def run_suites(
    generator: Generator,
    benchmark: str,
    data_dir: Union[str, Path],
    target=None,
    suites: Sequence[str] = ("forget", "neighbor"),
    options: Union[EvalOptions, Mapping[str, Any], None] = None,
) -> dict:
    """Run ``suites`` of ``benchmark`` ("rwku" | "muse") for one ``target`` (RWKU; None for MUSE).

    Returns ``{"benchmark", "target", "options", "suites_run", "skipped" ({suite: reason}, see
    ``EvalOptions.skip_missing``), "refusal_detector" (the detector behind the refusal figures), "metrics" (all
    suites' flat metrics merged),
    "suites": {name: {"metrics", "records", "seconds"}}}``. Unknown suite -> ``ValueError`` listing the valid
    ones; a missing file -> ``FileNotFoundError`` naming it; a malformed record -> ``ValueError`` naming the
    file, row and key.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of: {', '.join(BENCHMARKS)}")
    options = EvalOptions.from_any(options)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{benchmark} data folder not found: {data_dir}")
    order = expand_suites(benchmark, suites)
    resolved = _resolve_target(benchmark, data_dir, target)
    context = SuiteContext(generator, benchmark, data_dir, resolved, options)
    if resolved is not None:
        context.target_dir  # noqa: B018 - fail early (FileNotFoundError) on a missing target folder
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name in order:
        suite = EVALUATORS.get(name)
        missing = [r for r in suite.requires if r in skipped]
        if missing:
            skipped[name] = f"needs skipped suite(s) {', '.join(missing)}"
            continue
        started = time.perf_counter()
        try:
            output = suite.run(context)
        except FileNotFoundError as error:
            if not options.skip_missing:
                raise
            skipped[name] = str(error)
            continue
        output["seconds"] = round(time.perf_counter() - started, 3)
        context.results[name] = output
        metrics.update(output["metrics"])
    return {
        "benchmark": benchmark,
        "target": dataclasses.asdict(resolved) if resolved is not None else None,
        "options": dataclasses.asdict(options),
        "refusal_detector": options.refusal_detector,
        "suites_run": [name for name in order if name not in skipped],
        "skipped": skipped,
        "metrics": metrics,
        "suites": context.results,
    }
