"""Refusal detectors behind one registry, and RULE's own: one permissive regex, a match anywhere counts.

``get_detector(name, **options) -> Callable[[str], bool]`` (:data:`REFUSAL_DETECTORS`):

* ``rule``   — RULE's regex below (:func:`is_refusal`), unchanged; the rewards' default, because the paper's
  training runs are defined by it.
* ``strict`` — :func:`verl.workers.reward.refusal_strict.is_refusal_strict`: the refusal must be the reply's
  stance (first-person statements of not knowing, word boundaries, typographic apostrophes); the evaluators'
  default.
* ``judge``  — :class:`verl.workers.reward.refusal_judge.JudgeDetector`: a chat model asked a documented yes/no
  question; needs ``ask`` (a callable ``list[str] -> list[str]``), which the evaluation layer builds from a
  generator (:mod:`verl.eval.judge`), so this layer never imports a model.

Accuracy / precision / recall of each on the labelled set ``data/refusal_labels.jsonl``:
``python -m data.refusal_accuracy``.

The rule detector:

The pattern reproduces the twelve families of the original (RULE.md section 4.1) with the original's
behaviour kept on purpose, because the rewards (and so the published training runs) are defined by it:

* no word boundaries: ``"no"`` also matches inside ``"piano information"``, ``"encountered"`` anywhere;
* ``.*`` spans the whole text (DOTALL), so ``"not"`` early and ``"sure"`` much later still match;
* only straight apostrophes (``don't``, ``dont``), not the typographic ``don’t``.

Known results (tested in tests/workers/test_refusal.py): it matches 99 of the 100 RWKU ``idk_target``
templates (it misses "I'm unaware of that detail about ..."), about 0.5% of the boundary gold answers
(mostly "X did not ..." sentences), flags ordinary answers such as "It is not widely known ...",
"He encountered ...", "Unfortunately, the show was cancelled", "You should check ...", and misses
"I can't answer questions related to X".

The original is one ``re.VERBOSE`` pattern; verbose mode silently dropped a few literal spaces
(``" not"`` -> ``"not"``, ``"encountered "`` -> ``"encountered"``, ``"familiar with"`` ->
``"familiarwith"``, already covered by ``"familiar"``). The families below are written without
verbose mode, with those spaces already removed, so they match the same texts.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, Union

from verl.utils.registry import Registry
from verl.workers.reward.refusal_judge import JudgeDetector
from verl.workers.reward.refusal_strict import is_refusal_strict

# One regex per family (RULE.md section 4.1), in the original's order.
REFUSAL_FAMILIES: dict[str, str] = {
    "negated_knowing": (
        r"(?:don'?t|doesn'?t|didn'?t|do(?:es)?\s+not)\s+"
        r"(?:know|have|hold|possess|seem\s+to\s+have|cover|contain|extend|include)"
    ),
    "not_or_yet_then_knowing": (
        r"(?:not|yet)\s+.*(?:sure|certain|familiar|aware|equipped|able|acquainted|informed|knowledge|information"
        r"|question|know|data|educated|within|briefed|well-versed|learn|trained\s+on|the\s+best\s+source"
        r"|specializing\s+in)"
    ),
    "no_then_knowledge": r"no\s+.*(?:idea|insight|knowledge|information|data|enlightenment|clue|familiarity)",
    "not_learned": r"(?:haven'?t|hasn'?t|not)\s+(?:learned|the\s+faintest|been\s+(?:included|trained|briefed))",
    "encountered": r"encountered",
    "out_of_scope": r"(?:beyond|outside|out)\s+.*(?:knowledge|capabilities|expertise|reach|scope)",
    "at_a_loss": r"at\s+a\s+(?:loss|disadvantage)",
    "cannot": r"can'?t\s+(?:provide|say|shed\s+.*light|help|offer|take|make|fullfill)",
    "unable": r"unable\s+(?:to\s+provide|to\s+answer|to\s+access)",
    "regret": r"(?:I\s+)?(?:wish\s+I\s+could\s+say|regret\s+to\s+inform|must\s+(?:admit|confess))",
    "idioms": (
        r"Unfortunately,|clueless|stumped|a\s+mystery\s+to\s+me"
        r"|lacking\s+(?:information|knowledge|insight|specifics|data)|dark\s+about|draw(?:ing)?\s+a\s+blank"
        r"|short\s+with|limited\s+to|blank\s+on"
    ),
    "missing": r"(?:missing|without|lack|blind|uncharted)\s+.*(?:information|knowledge|insight|specifics)",
    "needs_lookup": (
        r"(?:need\s+to|require|have\s+to|must|ought\s+to|should)\s+"
        r"(?:look\s+up|check|search|find|verify|review|inspect|confirm|explore|investigate|examine)"
    ),
}

REFUSAL_PATTERN: re.Pattern[str] = re.compile(
    "|".join(f"(?:{family})" for family in REFUSAL_FAMILIES.values()), re.IGNORECASE | re.DOTALL
)
"""Case-insensitive, dot-matches-newline union of :data:`REFUSAL_FAMILIES`; use ``.search`` (match anywhere)."""


def is_refusal(text: str) -> bool:
    """True when :data:`REFUSAL_PATTERN` matches anywhere in ``text`` (RULE's ``R``)."""
    if not isinstance(text, str):
        raise TypeError(f"is_refusal expects a str, got {type(text).__name__}: {text!r:.80}")
    return REFUSAL_PATTERN.search(text) is not None


def refusal_families(text: str) -> list[str]:
    """Names of the families that match ``text`` (for debugging why a text counts as a refusal)."""
    return [name for name, family in REFUSAL_FAMILIES.items() if re.search(family, text, re.IGNORECASE | re.DOTALL)]


Detector = Callable[[str], bool]
REFUSAL_DETECTORS: Registry[Callable[..., Detector]] = Registry("refusal detector")
"""name -> factory ``(**options) -> detector``; a detector maps a reply to True (refusal) / False."""
REWARD_DEFAULT_DETECTOR = "rule"
EVAL_DEFAULT_DETECTOR = "strict"


@REFUSAL_DETECTORS.register("rule")
def _rule() -> Detector:
    return is_refusal


@REFUSAL_DETECTORS.register("strict")
def _strict() -> Detector:
    return is_refusal_strict


@REFUSAL_DETECTORS.register("judge")
def _judge(ask: Callable[[list[str]], list[str]] | None = None, fallback: str = "strict") -> Detector:
    if ask is None:
        raise ValueError(
            "refusal detector 'judge' needs a judge model: in the evaluators pass --judge-model PATH "
            "(EvalOptions.judge_model), in ReBO set worker.reward.judge_model; in code, get_detector('judge', "
            "ask=fn) with fn(list of user messages) -> list of replies (verl.eval.judge.generator_ask builds one)"
        )
    return JudgeDetector(ask, fallback=get_detector(fallback))


def check_detector_name(name: Any, where: str = "refusal detector") -> str:
    """``name`` when it is a registered detector, else ``ValueError`` naming ``where`` and the choices."""
    if not isinstance(name, str) or name not in REFUSAL_DETECTORS:
        raise ValueError(f"{where}={name!r} is not a refusal detector; choose one of: {', '.join(REFUSAL_DETECTORS)}")
    return name


def get_detector(name: str, **options) -> Detector:
    """The detector registered as ``name`` (``rule``, ``strict``, ``judge``); unknown name or option -> ValueError."""
    factory = REFUSAL_DETECTORS.get(check_detector_name(name))
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as error:
        raise ValueError(f"refusal detector {name!r} does not take options {sorted(options)}: {error}") from None
    return factory(**options)


def resolve_detector(detector: Union[str, Detector]) -> Detector:
    """A detector name (see :func:`get_detector`, without options) or a detector callable, as a callable."""
    if callable(detector):
        return detector
    return get_detector(detector)


def detect_all(detector: Detector, texts: Sequence[str]) -> list[bool]:
    """``[detector(t) for t in texts]``, in one batch when the detector can (the judge: one generation call)."""
    many = getattr(detector, "judge_many", None)
    return list(many(list(texts))) if many is not None else [bool(detector(t)) for t in texts]


def detector_name(detector: Union[str, Detector]) -> str:
    """The registered name of a detector (its ``name`` attribute for judges and custom ones, else its function)."""
    if isinstance(detector, str):
        return detector
    if detector is is_refusal or detector is is_refusal_strict:
        return "rule" if detector is is_refusal else "strict"
    return getattr(detector, "name", None) or getattr(detector, "__name__", "custom")
