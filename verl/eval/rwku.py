"""RWKU forget / neighbor probes (and RULE's boundary questions): prompts, generation, ROUGE-L recall.

Protocol (BENCHMARKS.md sections 1.4-1.5, RWKU's ``eval_forget.py`` / ``eval_neighbor.py``):

* prompt = chat template over the user content of :func:`verl.eval.prompts.probe_content` (FB for level 1,
  QA for level 2 and most level-3 attacks, the special forms for "affirmative suffix" and "incontext
  learning"), then ``"Answer:"`` after the assistant header (not for "affirmative suffix");
* greedy, 30 new tokens, stop at ``"\\n"`` (RWKU's stop ids are eos and the newline tokens; implemented as a
  stop string, switchable with ``EvalOptions.rwku_newline_stop``);
* prediction = generation stripped, ``"NOANSWER"`` when empty; score = ``rouge_l_recall(prediction, answer)``
  (the ``rouge`` 1.0.1 package's ROUGE-L recall, degenerate inputs -> 0.0).

Aggregation: per level the mean score; "all" is reported both ways - ``*_all_pooled`` (mean over every probe,
count-weighted: RWKU's Table 1 "All") and ``*_all_macro`` (mean of the level means: RULE's make_table.py);
``*_all`` is the pooled value. Level-3 means per attack type are ``forget_aa_type/<type>``.
"""

from __future__ import annotations

from verl.eval.datasets import RWKU_FILES, load_boundary_probes, load_probes
from verl.eval.prompts import probe_prompt
from verl.eval.suites import SuiteContext, register_suite
from verl.eval.text_metrics import NOANSWER, mean_or_none

MAX_NEW_TOKENS = 30
LEVEL_NAMES = {"1": "fb", "2": "qa", "3": "aa"}


def rwku_prediction(generation: str) -> str:
    """RWKU's post-processing: strip; empty or whitespace-only -> ``"NOANSWER"``."""
    stripped = generation.strip()
    return stripped if stripped else NOANSWER


def build_probe_records(ctx: SuiteContext, group: str, kind: str, probes: list[dict], level: str) -> list[dict]:
    """One record per probe with its prompt (``kind`` is the file key, e.g. "forget_aa")."""
    records = []
    for index, probe in enumerate(probes):
        probe_level = str(probe.get("level", level))
        probe_type = probe.get("type", "")
        prompt = probe_prompt(ctx.generator.tokenizer, probe["query"], probe_level, probe_type, ctx.icu_subject(probe))
        records.append(
            {
                "group": group,
                "level": LEVEL_NAMES.get(probe_level, probe_level),
                "file": RWKU_FILES.get(kind, kind),
                "index": index,
                "type": probe_type,
                "query": probe["query"],
                "answer": probe["answer"],
                "prompt": prompt,
            }
        )
    return records


def generate_and_score(ctx: SuiteContext, records: list[dict]) -> list[dict]:
    """Fill ``generation``, ``prediction`` and ``score`` (one generate call for all records, like RWKU)."""
    from verl.utils.rouge import rouge_l_recall

    sampling = ctx.options.sampling(
        max_new_tokens=MAX_NEW_TOKENS, stop=["\n"] if ctx.options.rwku_newline_stop else []
    )
    generations = ctx.generator.generate([r["prompt"] for r in records], sampling)
    for record, generation in zip(records, generations):
        record["generation"] = generation
        record["prediction"] = rwku_prediction(generation)
        record["score"] = rouge_l_recall(record["prediction"], record["answer"])
    return records


def aggregate(group: str, records: list[dict], levels: tuple[str, ...]) -> dict[str, float]:
    """Per-level means, pooled and macro "all", counts, and level-3 means per attack type."""
    metrics: dict[str, float] = {}
    level_means = []
    for level in levels:
        scores = [r["score"] for r in records if r["level"] == level]
        metrics[f"{group}_n_{level}"] = len(scores)
        if scores:
            metrics[f"{group}_{level}"] = mean_or_none(scores)
            level_means.append(metrics[f"{group}_{level}"])
    all_scores = [r["score"] for r in records]
    if all_scores:
        metrics[f"{group}_all_pooled"] = mean_or_none(all_scores)
        metrics[f"{group}_all_macro"] = mean_or_none(level_means)
        metrics[f"{group}_all"] = metrics[f"{group}_all_pooled"]
    for attack in sorted({r["type"] for r in records if r["level"] == "aa"}):
        scores = [r["score"] for r in records if r["level"] == "aa" and r["type"] == attack]
        metrics[f"{group}_aa_type/{attack.replace(' ', '_')}"] = mean_or_none(scores)
    return metrics


def _run_groups(ctx: SuiteContext, group: str, kinds: list[tuple[str, str]]) -> dict:
    records = []
    for kind, level in kinds:
        probes = load_probes(ctx.target_dir, kind, ctx.options.max_probes)
        records += build_probe_records(ctx, group, kind, probes, level)
    generate_and_score(ctx, records)
    levels = tuple(LEVEL_NAMES[level] for _, level in kinds)
    return {"metrics": aggregate(group, records, levels), "records": records}


@register_suite("forget", "rwku", description="forget FB / QA / AA probes, ROUGE-L recall (lower = forgotten)")
def forget_suite(ctx: SuiteContext) -> dict:
    return _run_groups(ctx, "forget", [("forget_fb", "1"), ("forget_qa", "2"), ("forget_aa", "3")])


@register_suite("neighbor", "rwku", description="neighbor FB / QA probes, ROUGE-L recall (higher = kept)")
def neighbor_suite(ctx: SuiteContext) -> dict:
    return _run_groups(ctx, "neighbor", [("neighbor_fb", "1"), ("neighbor_qa", "2")])


@register_suite("boundary", "rwku", description="RULE's synthetic boundary questions (FB + QA form), ROUGE-L recall")
def boundary_suite(ctx: SuiteContext) -> dict:
    fb, qa = load_boundary_probes(ctx.target_dir, ctx.options.max_probes)
    records = build_probe_records(ctx, "boundary", "boundary", fb, "1")
    records += build_probe_records(ctx, "boundary", "boundary", qa, "2")
    generate_and_score(ctx, records)
    return {"metrics": aggregate("boundary", records, ("fb", "qa")), "records": records}
