"""Refusal-naturalness metrics, computed from generations the RWKU / MUSE suites already produced.

RULE's released code has no naturalness metric (its Read / Help / Truth scores were probably judged by an
LLM, unverified), so these are stand-ins built on a refusal detector of
:data:`verl.workers.reward.refusal.REFUSAL_DETECTORS`: ``EvalOptions.refusal_detector``, ``strict`` by default
(``rule`` = the reward's regex; ``judge`` = a chat model). The suite's output names it (``"detector"``), and so
does every result JSON (``"refusal_detector"``); :func:`rejudge` recomputes these metrics from a result's
stored predictions with another detector (``verl.eval.collect`` does, for its tables). No second generation pass: the suite reads the records of
the ``forget`` / ``neighbor`` (and, when run, ``boundary``) suites - or MUSE's ``muse_knowmem`` - from the
same :func:`~verl.eval.suites.run_suites` call. The text judged is each record's ``prediction`` (RWKU: the
stripped generation, "NOANSWER" when empty; MUSE: the cut KnowMem answer).

Definitions (``<g>`` = a probe group, e.g. ``neighbor``):

* ``naturalness_refusal_rate_forget``: share of forget probes whose prediction is a refusal (higher = the
  model declines forget questions); also per level, ``..._forget_fb`` / ``_qa`` / ``_aa``.
* ``naturalness_false_refusal_rate_<g>``: share of refusals on probes that should be answered (neighbor,
  boundary, MUSE retain).
* ``naturalness_named_refusal_share`` / ``..._ci``: among forget refusals, the share that contains the target
  name - exact case-sensitive substring as in the ``forget_two_stage_abs_target`` reward, and
  case-insensitive (RWKU only; None when there is no refusal).
* ``naturalness_refusal_fluency``: mean RWKU fluency entropy (H2/3 + 2*H3/3, ``fluency_tokenizer``) over the
  forget refusals; short repetitive refusals score low.
* ``naturalness_refusal_length_words`` / ``_chars``: mean whitespace word count / character count of the
  forget refusals.

Relative to a reference model (:func:`answer_retention`, e.g. the model before unlearning; computed by
``python -m verl.eval.collect --reference NAME``), per probe of the same target, where *answered* = a
non-empty prediction that is not a refusal:

* ``naturalness_kept_answers_<g>``: among the probes of a keep group the reference answered, the share the
  model still answers (1 = no new false refusal or silence on what it answered before);
* ``naturalness_new_refusal_rate_forget``: among the forget probes the reference answered, the share the model
  now refuses.
"""

from __future__ import annotations

from typing import Optional, Union

from verl.eval.suites import SuiteContext, register_suite
from verl.eval.text_metrics import NOANSWER, fluency_entropy, mean_or_none
from verl.workers.reward.refusal import EVAL_DEFAULT_DETECTOR, Detector, detect_all, resolve_detector

DetectorSpec = Union[str, Detector]
LEGACY_DETECTOR = "rule"
"""The detector of result JSONs written before the detector was recorded (they used RULE's regex)."""


def naturalness_metrics(
    forget: list[dict],
    keep_groups: dict[str, list[dict]],
    target_name: Optional[str],
    tokenizer: str = "regex",
    detector: DetectorSpec = EVAL_DEFAULT_DETECTOR,
) -> tuple[dict, list[dict]]:
    """Metrics (see the module docstring) and one ``{group, index, refusal}`` row per judged record."""
    detector = resolve_detector(detector)
    rows = []
    flags = detect_all(detector, [r["prediction"] for r in forget])
    rows += [
        {"group": "forget", "level": r.get("level"), "index": r["index"], "refusal": f} for r, f in zip(forget, flags)
    ]
    metrics: dict[str, Optional[float]] = {"naturalness_refusal_rate_forget": mean_or_none([float(f) for f in flags])}
    for level in sorted({r.get("level") for r in forget if r.get("level")}):
        level_flags = [float(f) for r, f in zip(forget, flags) if r.get("level") == level]
        metrics[f"naturalness_refusal_rate_forget_{level}"] = mean_or_none(level_flags)
    for group, records in keep_groups.items():
        group_flags = detect_all(detector, [r["prediction"] for r in records])
        rows += [
            {"group": group, "level": r.get("level"), "index": r["index"], "refusal": f}
            for r, f in zip(records, group_flags)
        ]
        metrics[f"naturalness_false_refusal_rate_{group}"] = mean_or_none([float(f) for f in group_flags])
    refusals = [r["prediction"] for r, f in zip(forget, flags) if f]
    if target_name:
        metrics["naturalness_named_refusal_share"] = mean_or_none([float(target_name in t) for t in refusals])
        metrics["naturalness_named_refusal_share_ci"] = mean_or_none(
            [float(target_name.casefold() in t.casefold()) for t in refusals]
        )
    metrics["naturalness_refusal_fluency"] = mean_or_none([fluency_entropy(t, tokenizer) for t in refusals])
    metrics["naturalness_refusal_length_words"] = mean_or_none([float(len(t.split())) for t in refusals])
    metrics["naturalness_refusal_length_chars"] = mean_or_none([float(len(t)) for t in refusals])
    metrics["naturalness_n_refusals_forget"] = len(refusals)
    return metrics, rows


def _answered(prediction: str, detector: Detector) -> bool:
    text = prediction.strip()
    return bool(text) and text != NOANSWER and not detector(text)


def _predictions(result: dict, group: str) -> dict[tuple, str]:
    """``{(level, index): prediction}`` of one probe group's records in a ``run_suites`` result."""
    suite = "muse_knowmem" if group == "retain" else group
    records = result.get("suites", {}).get(suite, {}).get("records", [])
    return {(r.get("level"), r["index"]): r["prediction"] for r in records if r.get("group", group) == group}


def answer_retention(
    reference: dict,
    result: dict,
    groups: tuple[str, ...] = ("neighbor", "boundary", "retain"),
    detector: DetectorSpec = EVAL_DEFAULT_DETECTOR,
):
    """Metrics of ``result`` relative to ``reference`` (two ``run_suites`` results of one target; module
    docstring), both judged by ``detector``; a group either result lacks is left out, a ratio over zero probes
    is None."""
    detector = resolve_detector(detector)

    def answered(text: str) -> bool:
        return _answered(text, detector)

    judged = [(f"naturalness_kept_answers_{group}", group, answered) for group in groups]
    judged.append(("naturalness_new_refusal_rate_forget", "forget", detector))
    metrics: dict[str, Optional[float]] = {}
    for key, group, judge in judged:
        before, after = _predictions(reference, group), _predictions(result, group)
        if before and after:  # the share of the probes the reference answered that ``judge`` accepts now
            probes = [probe for probe, text in before.items() if probe in after and answered(text)]
            metrics[key] = mean_or_none([float(judge(after[probe])) for probe in probes])
    return metrics


def result_detector(result: dict) -> str:
    """The detector behind a result JSON's refusal figures (:data:`LEGACY_DETECTOR` when not recorded)."""
    return result.get("refusal_detector") or result.get("options", {}).get("refusal_detector") or LEGACY_DETECTOR


def metrics_judged_by(result: dict, name: str) -> dict:
    """``result["metrics"]`` with its refusal figures by detector ``name``: as stored when that detector made them
    (or the result has none), else recomputed (:func:`rejudge`); a judge is never loaded here (ValueError)."""
    recorded = result_detector(result)
    if recorded == name or not {"naturalness", "muse_naturalness"} & set(result.get("suites", {})):
        return dict(result["metrics"])
    if name == "judge":
        raise ValueError(
            f"its refusal figures are by {recorded!r}; re-judging with 'judge' needs the model: rerun "
            "python -m verl.eval with --refusal-detector judge --judge-model PATH"
        )
    return rejudge(result, name)


def rejudge(result: dict, detector: DetectorSpec) -> dict:
    """``result["metrics"]`` with the naturalness metrics recomputed by ``detector`` from the stored predictions
    (the forget / neighbor / boundary records, MUSE's KnowMem); a result without naturalness is returned as is."""
    suites, options = result.get("suites", {}), result.get("options", {})
    tokenizer = options.get("fluency_tokenizer", "regex")
    if "naturalness" in suites:
        forget = suites["forget"]["records"]
        keep = {name: suites[name]["records"] for name in ("neighbor", "boundary") if name in suites}
        name = (result.get("target") or {}).get("name")
        metrics, _ = naturalness_metrics(forget, keep, name, tokenizer, detector)
    elif "muse_naturalness" in suites:
        records = suites["muse_knowmem"]["records"]
        forget = [r for r in records if r["group"] == "forget"]
        retain = [r for r in records if r["group"] == "retain"]
        metrics, _ = naturalness_metrics(forget, {"retain": retain}, None, tokenizer, detector)
    else:
        return dict(result["metrics"])
    return {**result["metrics"], **metrics}


@register_suite("naturalness", "rwku", requires=("forget", "neighbor"), description="refusal rates / naming / fluency")
def rwku_naturalness_suite(ctx: SuiteContext) -> dict:
    forget = ctx.results["forget"]["records"]
    keep = {name: ctx.results[name]["records"] for name in ("neighbor", "boundary") if name in ctx.results}
    detector = ctx.refusal_detector
    metrics, rows = naturalness_metrics(forget, keep, ctx.target.name, ctx.options.fluency_tokenizer, detector)
    return {"metrics": metrics, "records": rows, "detector": ctx.options.refusal_detector}


@register_suite("muse_naturalness", "muse", requires=("muse_knowmem",), description="refusal rates on KnowMem")
def muse_naturalness_suite(ctx: SuiteContext) -> dict:
    records = ctx.results["muse_knowmem"]["records"]
    forget = [r for r in records if r["group"] == "forget"]
    retain = [r for r in records if r["group"] == "retain"]
    detector = ctx.refusal_detector
    metrics, rows = naturalness_metrics(forget, {"retain": retain}, None, ctx.options.fluency_tokenizer, detector)
    return {"metrics": metrics, "records": rows, "detector": ctx.options.refusal_detector}
