"""RULE's rule rewards (RULE.md section 4.3), one registered function per original ``score_function`` name.

Per-sample signature (``reward_type="sequential"``)::

    fn(response: str, ground_truth: list | tuple | np.ndarray, **kwargs) -> dict[str, float]

``ground_truth`` is a row's ``solution``: ``["<reject>", refusal_or_gold, target_name]`` for forget rows
(the name is absent in older non-target files), ``["<normal>", gold_answer]`` for boundary/retain rows.
Every function returns ``"overall"`` (the scalar reward) plus float components the trainer logs as
``reward/<key>``; the key set of a function is the same on every row, so per-key lists stay aligned.

Notation below: ``R`` = the refusal detector's verdict on the response, ``rec(x)`` = ROUGE-L recall
of the response against ``x`` (pltrdy ``rouge`` 1.0.1, :mod:`verl.utils.rouge`), ``gold`` = ``ground_truth[1]``,
``name`` = ``ground_truth[2]`` (exact, case-sensitive substring test). Thresholds compare with ``>``.

Every function takes ``refusal_detector``: a name of :data:`~verl.workers.reward.refusal.REFUSAL_DETECTORS`
(``rule`` = RULE's regex :func:`~verl.workers.reward.refusal.is_refusal`, the default and the paper's; ``strict``)
or a detector callable (``str -> bool``, e.g. a ``judge``); the manager passes ``worker.reward.refusal_detector``.

Differences from the original, all on inputs where it crashed or was ill-defined: degenerate ROUGE inputs
(empty / dots-only text) score 0.0 everywhere (``forget`` and ``forget_half_reject`` used to raise), and a
malformed row raises ``ValueError`` showing the row instead of an ``IndexError`` deep inside a worker.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Union

from verl.utils.registry import Registry
from verl.utils.rouge import rouge_l_recall, rouge_l_recall_mean
from verl.workers.reward.refusal import REWARD_DEFAULT_DETECTOR, Detector, resolve_detector

REWARD_FUNCTIONS: Registry = Registry("reward function")
RefusalDetector = Union[str, Detector]
REJECT, NORMAL = "<reject>", "<normal>"


class Row(NamedTuple):
    """A validated ground-truth row."""

    should_refuse: bool
    gold: str
    """``ground_truth[1]``: the refusal text (forget training rows) or the gold answer."""
    references: list[str]
    """``ground_truth[1:]``, what RULE's mean-recall rewards compare against."""
    name: str | None
    """``ground_truth[2]`` on ``<reject>`` rows that have it (the forget target's name), else None."""


def parse_ground_truth(ground_truth: Any, function: str, needs_name: bool = False) -> Row:
    """Validate one ``solution`` row and unpack it; ``ValueError`` naming the problem and showing the row.

    Rules: a list/tuple/1-d array (not a str) of strings; first element ``"<reject>"`` or ``"<normal>"``;
    a second element (refusal or gold answer); with ``needs_name``, ``<reject>`` rows need a non-empty
    third element (the target name; an empty name would be "found" in every response).
    """
    if isinstance(ground_truth, (str, bytes)) or not hasattr(ground_truth, "__len__"):
        raise ValueError(f"{function}: ground_truth must be a list like ['<normal>', gold], got {ground_truth!r}")
    row = list(ground_truth)
    if len(row) < 2:
        raise ValueError(f"{function}: ground_truth needs a label and a text, got {row!r}")
    bad = [i for i, item in enumerate(row) if not isinstance(item, str)]
    if bad:
        raise ValueError(f"{function}: ground_truth element {bad[0]} is not a str in {row!r}")
    label = row[0]
    if label not in (REJECT, NORMAL):
        raise ValueError(f"{function}: ground_truth[0] must be '<reject>' or '<normal>', got {label!r} in {row!r}")
    should_refuse = label == REJECT
    name = row[2] if should_refuse and len(row) > 2 else None
    if should_refuse and needs_name and not name:
        raise ValueError(
            f"{function}: '<reject>' rows need the target name as ground_truth[2] (a '_target' data file), got {row!r}"
        )
    return Row(should_refuse=should_refuse, gold=row[1], references=row[1:], name=name)


@REWARD_FUNCTIONS.register("forget_two_stage_abs_target")
def forget_two_stage_abs_target(
    response: str,
    ground_truth: Any,
    rouge_threshold: float = 0.3,
    refusal_detector: RefusalDetector = REWARD_DEFAULT_DETECTOR,
) -> dict[str, float]:
    """Main RWKU reward, values in {0, 0.5, 1}.

    ``<reject>``: 0.5 for refusing, +0.5 if the refusal also contains the target ``name``.
    ``<normal>``: 0.5 for not refusing, +0.5 if also ``rec(gold) > rouge_threshold``.
    Components: ``rouge_l`` = rec(gold) on every row, ``refusal`` = R, ``name_hit`` = 1.0 iff ``name`` occurs
    in the response (reject rows; always 0.0 on normal rows, which carry no name).
    """
    row = parse_ground_truth(ground_truth, "forget_two_stage_abs_target", needs_name=True)
    refused = bool(resolve_detector(refusal_detector)(response))
    rouge_l = rouge_l_recall(response, row.gold)
    name_hit = row.should_refuse and row.name in response
    if row.should_refuse:
        overall = 0.5 * refused + 0.5 * (refused and name_hit)
    else:
        overall = 0.5 * (not refused) + 0.5 * (not refused and rouge_l > rouge_threshold)
    return {"overall": float(overall), "rouge_l": rouge_l, "refusal": float(refused), "name_hit": float(name_hit)}


@REWARD_FUNCTIONS.register("forget_two_stage_abs_target_half_reject")
def forget_two_stage_abs_target_half_reject(
    response: str, ground_truth: Any, refusal_detector: RefusalDetector = REWARD_DEFAULT_DETECTOR
) -> dict[str, float]:
    """``<reject>``: 0.25·R + 0.25·(R and name in response); ``<normal>``: 1 if not R (correctness ignored).

    Components as :func:`forget_two_stage_abs_target` (``rouge_l`` = rec(gold) is logged, not rewarded).
    """
    row = parse_ground_truth(ground_truth, "forget_two_stage_abs_target_half_reject", needs_name=True)
    refused = bool(resolve_detector(refusal_detector)(response))
    name_hit = row.should_refuse and row.name in response
    if row.should_refuse:
        overall = 0.25 * refused + 0.25 * (refused and name_hit)
    else:
        overall = 1.0 * (not refused)
    return {
        "overall": float(overall),
        "rouge_l": rouge_l_recall(response, row.gold),
        "refusal": float(refused),
        "name_hit": float(name_hit),
    }


@REWARD_FUNCTIONS.register("forget_two_stage", "forget_two_stage_abs")
def forget_two_stage(
    response: str,
    ground_truth: Any,
    rouge_threshold: float = 0.3,
    refusal_detector: RefusalDetector = REWARD_DEFAULT_DETECTOR,
) -> dict[str, float]:
    """MUSE reward (``forget_two_stage_abs`` is the same code in the original).

    ``<reject>``: 1 if R. ``<normal>``: 0.5 for not refusing, +0.5 if also mean rec(ground_truth[1:]) >
    ``rouge_threshold``. ``rouge_l`` = mean rec(ground_truth[1:]) on every row (on target forget rows that
    mean includes the name, as in the original; it is only logged there); ``refusal`` = R.
    """
    row = parse_ground_truth(ground_truth, "forget_two_stage")
    refused = bool(resolve_detector(refusal_detector)(response))
    rouge_l = rouge_l_recall_mean(response, row.references)
    if row.should_refuse:
        overall = 1.0 * refused
    else:
        overall = 0.5 * (not refused) + 0.5 * (not refused and rouge_l > rouge_threshold)
    return {"overall": float(overall), "rouge_l": rouge_l, "refusal": float(refused)}


def _forget(response, ground_truth, function: str, reject_value: float, threshold: float, detector) -> dict:
    row = parse_ground_truth(ground_truth, function)
    refused = bool(resolve_detector(detector)(response))
    if row.should_refuse:
        return {"overall": reject_value * refused, "rouge_l": 0.0, "refusal": float(refused)}
    rouge_l = rouge_l_recall_mean(response, row.references)
    return {"overall": float(rouge_l > threshold), "rouge_l": rouge_l, "refusal": float(refused)}


@REWARD_FUNCTIONS.register("forget")
def forget(
    response: str,
    ground_truth: Any,
    rouge_threshold: float = 0.5,
    refusal_detector: RefusalDetector = REWARD_DEFAULT_DETECTOR,
) -> dict[str, float]:
    """``<reject>``: 1 if R. ``<normal>``: 1 if mean rec(ground_truth[1:]) > ``rouge_threshold`` (no refusal check).

    ``rouge_l`` is 0.0 on reject rows (not computed there, as in the original); ``refusal`` = R on every row.
    """
    return _forget(response, ground_truth, "forget", 1.0, rouge_threshold, refusal_detector)


@REWARD_FUNCTIONS.register("forget_half_reject")
def forget_half_reject(
    response: str,
    ground_truth: Any,
    rouge_threshold: float = 0.5,
    refusal_detector: RefusalDetector = REWARD_DEFAULT_DETECTOR,
) -> dict[str, float]:
    """As :func:`forget` but a refusal on a ``<reject>`` row earns 0.5."""
    return _forget(response, ground_truth, "forget_half_reject", 0.5, rouge_threshold, refusal_detector)


def _forget_abs(response: str, ground_truth: Any, function: str, reject_value: float, detector) -> dict:
    row = parse_ground_truth(ground_truth, function)
    refused = bool(resolve_detector(detector)(response))
    overall = reject_value * refused if row.should_refuse else 1.0 * (not refused)
    return {"overall": float(overall), "refusal": float(refused)}


@REWARD_FUNCTIONS.register("forget_abs")
def forget_abs(
    response: str, ground_truth: Any, refusal_detector: RefusalDetector = REWARD_DEFAULT_DETECTOR
) -> dict[str, float]:
    """``<reject>``: 1 if R. ``<normal>``: 1 if not R (answer correctness ignored). Components: ``refusal``."""
    return _forget_abs(response, ground_truth, "forget_abs", 1.0, refusal_detector)


@REWARD_FUNCTIONS.register("forget_abs_half_reject")
def forget_abs_half_reject(
    response: str, ground_truth: Any, refusal_detector: RefusalDetector = REWARD_DEFAULT_DETECTOR
) -> dict[str, float]:
    """``<reject>``: 0.5 if R. ``<normal>``: 1 if not R. Components: ``refusal``."""
    return _forget_abs(response, ground_truth, "forget_abs_half_reject", 0.5, refusal_detector)


@REWARD_FUNCTIONS.register("reject_behave_reward")
def reject_behave_reward(
    response: str,
    ground_truth: Any,
    reject_ratio: float = 0.7,
    enable_target_reject: bool = True,
    rouge_threshold: float = 0.3,
    refusal_detector: RefusalDetector = REWARD_DEFAULT_DETECTOR,
) -> dict[str, float]:
    """``overall = reject_ratio·reject_reward + (1 − reject_ratio)·behave_reward`` (not used by RULE's scripts).

    ``reject_reward`` = 1 iff (row is ``<reject>``) == R. ``behave_reward`` = 1 iff rec(x) > ``rouge_threshold``
    where x is the target name (``ground_truth[2]``) on ``<reject>`` rows — only with ``enable_target_reject``,
    otherwise 0 there — and the gold answer on ``<normal>`` rows. Also emits ``refusal`` = R and
    ``rouge_l`` = rec(x) (0.0 on reject rows when ``enable_target_reject`` is False).
    """
    row = parse_ground_truth(ground_truth, "reject_behave_reward", needs_name=enable_target_reject)
    refused = bool(resolve_detector(refusal_detector)(response))
    reject_reward = float(row.should_refuse == refused)
    if row.should_refuse:
        rouge_l = rouge_l_recall(response, row.name) if enable_target_reject else 0.0
    else:
        rouge_l = rouge_l_recall(response, row.gold)
    behave_reward = float(rouge_l > rouge_threshold)
    return {
        "overall": reject_ratio * reject_reward + (1.0 - reject_ratio) * behave_reward,
        "reject_reward": reject_reward,
        "behave_reward": behave_reward,
        "refusal": float(refused),
        "rouge_l": rouge_l,
    }
