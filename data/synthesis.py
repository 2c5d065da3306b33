"""Boundary-set synthesis for ReBO (RULE.md section 5; RULE never released its generator).

For each forget question ``q`` about a target, an instruction model writes
  (a) ``FB_instruction``: ``q`` rewritten as a cloze with a ``___`` slot (same forget fact);
  (b) ``neighbor_question``: ``q``'s surface template about a similar but different entity, with its answer;
  (c) ``FB_neighbor_question``: a cloze version of (b) about yet another similar entity, with its answer.
Rows keep RULE's ``reject_with_fb_neighbor_target.json`` schema; :mod:`data.rebo_rows` turns them into
the ReBO training rows ``{prompt, solution}`` (``q``, FB(q) -> ``["<reject>", refusal, target]``; (b), (c) ->
``["<normal>", answer]``) and builds the validation rows from the benchmark probes.

The generator is any ``generate_fn(prompts: list[str]) -> list[str]`` (same length, same order; the contract
and the transformers adapter are in :mod:`data.generators`). Prompts are *user-message contents*: the
generator applies the chat template (the runner's ``synth`` stage uses the engine's rollout worker group).
Templates (few-shot, strict ``Label: value`` lines, parsed leniently: any case, markdown bold, bullets,
quotes) are :data:`FB_PROMPT`, :data:`NEIGHBOR_PROMPT` and :data:`FB_NEIGHBOR_PROMPT`.

Filters (reason keys of :class:`SynthesisStats`): ``unparseable`` (a required label missing or empty),
``empty_answer``, ``no_blank`` (a cloze without ``___``; runs of 2+ underscores count as the blank),
``mentions_target`` (the neighbour entity, question or answer names the target: full name or last name,
case- and accent-insensitive) and ``refusal_answer`` (RULE's ``is_refusal`` matches the answer).

CLI: ``python -m data.synthesis --model PATH --data-dir DIR --target 1 --out DIR [--limit N] [--priming MODE]``
reads the target's forget questions (``reject_target.json``, else ``reject.json``) and writes ``OUT/<n>_<Name>/``
``{reject_with_fb_neighbor_target, rl_rejection_with_fb_neighbor_target, rl_rejection_eval_target,
synthesis_stats}.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from data.generators import PRIMING_MODES, GenerateFn, check_priming, generate_labelled, hf_generate_fn
from data.rebo_rows import NORMAL, REJECT, build_eval_rows, flatten_rebo_rows
from verl.utils.fileio import write_json_atomic

KINDS = ("fb", "neighbor", "fb_neighbor")

# Target-named refusals ("{name}" = target); every one is caught by RULE's is_refusal (tested).
REFUSAL_TEMPLATES: tuple[str, ...] = (
    "I'm not sure about {name}.",
    "I don't have any information about {name}.",
    "I'm not familiar with {name}.",
    "I don't know anything about {name}.",
    "I have no knowledge of {name}.",
    "That is beyond my knowledge about {name}.",
    "I'm afraid I can't help with questions about {name}.",
    "I'm not aware of any details about {name}.",
    "I can't provide an answer about {name}.",
    "I don't have the answer to that question about {name}.",
    "Sorry, I'm unable to answer questions about {name}.",
    "I have no idea about {name}.",
    "I'm drawing a blank on {name}.",
    "My knowledge doesn't cover {name}.",
    "I'm not certain about anything concerning {name}.",
    "I lack information about {name}.",
    "I haven't learned about {name}.",
    "Unfortunately, I know nothing about {name}.",
    "I'm not able to answer that about {name}.",
    "I don't hold any information on {name}.",
    "I'm clueless when it comes to {name}.",
    "I must admit I don't know about {name}.",
    "That's outside my knowledge of {name}.",
    "I'm at a loss regarding {name}.",
    "I have no data on {name}.",
)

FB_PROMPT = """Rewrite the question as a fill-in-the-blank sentence: put ___ (three underscores) where the answer goes and keep every other detail. Reply with exactly one line:
Statement: <the sentence with ___>

Question: What pseudonym has Stephen King published under?
Statement: Stephen King has published under the pseudonym ___.

Question: In which city was Marie Curie born?
Statement: Marie Curie was born in the city of ___.

Question: {question}"""

NEIGHBOR_PROMPT = """Here is a question about {target}. Ask the same question about a different but similar entity (for a person: someone of the same profession or field), keeping the wording and changing only the details that belong to {target}. Then answer the new question briefly and correctly. Never mention {target}. Reply in exactly this format:
Entity: <the new entity>
Question: <the new question>
Answer: <a short answer>

Target: Stephen King
Question: What pseudonym has Stephen King published under?
Entity: Agatha Christie
Question: What pseudonym has Agatha Christie published under?
Answer: Mary Westmacott

Target: {target}
Question: {question}"""

FB_NEIGHBOR_PROMPT = """Here is a question about {target}. Write a fill-in-the-blank sentence with the same meaning about a different but similar entity (not {avoid}), with ___ (three underscores) where the answer goes, and give the answer. Never mention {target}. Reply in exactly this format:
Entity: <the new entity>
Statement: <the sentence with ___>
Answer: <a short answer>

Target: Stephen King
Question: What pseudonym has Stephen King published under?
Entity: Agatha Christie
Statement: Agatha Christie has published under the pseudonym ___.
Answer: Mary Westmacott

Target: {target}
Question: {question}"""

FB_LABELS = ("Statement",)
NEIGHBOR_LABELS = ("Entity", "Question", "Answer")
FB_NEIGHBOR_LABELS = ("Entity", "Statement", "Answer")
"""The ``Label: value`` lines each template asks for, in order (what priming starts the assistant turn with)."""

_LABEL_LINE = re.compile(
    r"^[\s>*#\-\d.)]*\**\s*(entity|question|statement|answer)\s*\**\s*:\s*\**\s*(.*?)\s*\**\s*$", re.IGNORECASE
)
_QUOTES = ("\"'", "“”", "‘’")


@dataclass
class SynthesisStats:
    """Counts per kind (``fb``, ``neighbor``, ``fb_neighbor``): ``kept`` and ``filtered[kind][reason]``."""

    questions: int = 0
    kept: Counter = field(default_factory=Counter)
    filtered: dict[str, Counter] = field(default_factory=lambda: {kind: Counter() for kind in KINDS})

    def to_dict(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "kept": {kind: self.kept[kind] for kind in KINDS},
            "filtered": {kind: dict(sorted(self.filtered[kind].items())) for kind in KINDS},
        }


def _clean(value: str) -> str:
    value = value.strip().strip("*").strip()
    for opening, closing in _QUOTES if len(value) >= 2 else ():
        if value[0] in opening + closing and value[-1] in opening + closing:
            return value[1:-1].strip()
    return value


def parse_labelled(text: str, labels: Sequence[str], start: Optional[str] = None) -> Optional[dict[str, str]]:
    """The first ``Label: value`` line of each label (lower-case keys), or None when one is missing.

    With ``start``, only lines from the first ``start`` label on are read (so an echoed input question
    before the model's ``Entity:`` line is ignored). Values are stripped of markdown bold and matched quotes.
    """
    found: dict[str, str] = {}
    started = start is None
    for line in text.splitlines():
        match = _LABEL_LINE.match(line)
        if match is None:
            continue
        label, value = match.group(1).lower(), _clean(match.group(2))
        started = started or label == start
        if started and label in labels and label not in found:
            found[label] = value
    return found if all(label in found for label in labels) else None


def normalise_blank(text: str) -> str:
    """Runs of two or more underscores become exactly ``___``."""
    return re.sub(r"_{2,}", "___", text)


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


def mentions_target(text: str, target: str) -> bool:
    """True when ``text`` names ``target`` by full name or last name (whole words, case/accent-insensitive).

    For names with a title after a comma ("Prince Harry, Duke of Sussex") the part before the comma counts.
    """
    base = target.split(",")[0].strip()
    names = {target, base, base.split()[-1] if base else ""}
    folded = _fold(text)
    return any(len(n) >= 2 and re.search(rf"(?<!\w){re.escape(_fold(n))}(?!\w)", folded) for n in names)


def _check_neighbour(output: str, target: str, cloze: bool) -> tuple[Optional[dict], str]:
    """Parse one neighbour reply -> ({entity, question, answer}, "") or (None, reason)."""
    from verl.workers.reward.refusal import is_refusal

    text_label = "statement" if cloze else "question"
    parsed = parse_labelled(output, ("entity", text_label, "answer"), start="entity")
    if parsed is None or not parsed["entity"] or not parsed[text_label]:
        return None, "unparseable"
    question = normalise_blank(parsed[text_label]) if cloze else parsed[text_label]
    if not parsed["answer"]:
        return None, "empty_answer"
    if cloze and "___" not in question:
        return None, "no_blank"
    if any(mentions_target(parsed[key], target) for key in ("entity", text_label, "answer")):
        return None, "mentions_target"
    if is_refusal(parsed["answer"]):
        return None, "refusal_answer"
    return {"entity": parsed["entity"], "question": question, "answer": parsed["answer"]}, ""


def synthesize_boundary(
    questions: Sequence[str],
    target: str,
    generate_fn: GenerateFn,
    *,
    refusals: Optional[Sequence[str]] = None,
    intro: str = "",
    priming: str = "none",
) -> tuple[list[dict], SynthesisStats]:
    """Boundary-source rows (RULE's ``reject_with_fb_neighbor_target.json`` schema) for ``questions``.

    Two rounds of generation: FB rewrites + neighbour questions together, then FB neighbours (told to avoid
    the target and the first neighbour's entity); one ``generate_fn`` call per round, or one per field with
    ``priming="fields"`` (see :mod:`data.generators`). Row ``i`` has ``output = refusals[i mod len]`` (default:
    :data:`REFUSAL_TEMPLATES` with the target name); parts that fail a filter are left out of the row (keys
    ``FB_instruction``, ``neighbor_question``, ``FB_neighbor_question`` absent) and counted in the stats.
    """
    if not target:
        raise ValueError("synthesize_boundary: empty target name")
    refusals = list(refusals) if refusals else [t.format(name=target) for t in REFUSAL_TEMPLATES]
    for i, question in enumerate(questions):
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"synthesize_boundary: forget question {i} is empty or not a str: {question!r}")
    check_priming(priming)
    stats = SynthesisStats(questions=len(questions))
    first = generate_labelled(
        generate_fn,
        [FB_PROMPT.format(question=q) for q in questions]
        + [NEIGHBOR_PROMPT.format(target=target, question=q) for q in questions],
        [FB_LABELS] * len(questions) + [NEIGHBOR_LABELS] * len(questions),
        priming,
        "FB-rewrite and neighbour",
    )
    fb_outputs, neighbour_outputs = first[: len(questions)], first[len(questions) :]
    rows = []
    for i, question in enumerate(questions):
        row = {"input": "", "output": refusals[i % len(refusals)], "subject": target, "instruction": question}
        row["intro"] = intro
        parsed = parse_labelled(fb_outputs[i], ("statement",))
        statement = normalise_blank(parsed["statement"]) if parsed else ""
        reason = "unparseable" if not statement else ("" if "___" in statement else "no_blank")
        if reason:
            stats.filtered["fb"][reason] += 1
        else:
            row["FB_instruction"] = statement
            stats.kept["fb"] += 1
        neighbour, reason = _check_neighbour(neighbour_outputs[i], target, cloze=False)
        if neighbour is None:
            stats.filtered["neighbor"][reason] += 1
        else:
            row["neighbor_question"] = neighbour
            stats.kept["neighbor"] += 1
        rows.append(row)
    avoid = [
        " or ".join([target] + ([r["neighbor_question"]["entity"]] if "neighbor_question" in r else [])) for r in rows
    ]
    second = generate_labelled(
        generate_fn,
        [FB_NEIGHBOR_PROMPT.format(target=target, avoid=a, question=q) for a, q in zip(avoid, questions)],
        [FB_NEIGHBOR_LABELS] * len(questions),
        priming,
        "FB-neighbour",
    )
    for row, output in zip(rows, second):
        neighbour, reason = _check_neighbour(output, target, cloze=True)
        if neighbour is None:
            stats.filtered["fb_neighbor"][reason] += 1
        else:
            row["FB_neighbor_question"] = {"question": neighbour["question"], "answer": neighbour["answer"]}
            stats.kept["fb_neighbor"] += 1
        if "neighbor_question" in row:
            row["neighbor_question"] = {k: row["neighbor_question"][k] for k in ("question", "answer")}
    return rows, stats


def load_forget_questions(
    target_dir: Union[str, Path], limit: Optional[int] = None
) -> tuple[list[str], list[str], str, str]:
    """(questions, refusals, target name, intro) from ``reject_target.json``, else ``reject.json``
    (whose generic refusals are replaced by ``idk_target.json`` / :data:`REFUSAL_TEMPLATES` with the name);
    ``limit``: the first N questions only."""
    from verl.eval.datasets import read_json_list, read_records

    folder = Path(target_dir)
    named = (folder / "reject_target.json").is_file()
    rows = read_records(folder / ("reject_target.json" if named else "reject.json"), ("instruction", "subject"))
    if not rows:
        raise ValueError(f"{folder}: no forget questions in {'reject_target' if named else 'reject'}.json")
    name, intro = rows[0]["subject"], rows[0].get("intro", "")
    if named:
        refusals = [row.get("output", "") for row in rows]
    elif (folder / "idk_target.json").is_file():
        refusals = read_json_list(folder / "idk_target.json")
    else:
        refusals = [t.format(name=name) for t in REFUSAL_TEMPLATES]
    questions = [row["instruction"] for row in rows]
    return (questions, refusals, name, intro) if limit is None else (questions[:limit], refusals[:limit], name, intro)


def reject_target_rows(target_dir: Union[str, Path], limit: Optional[int] = None) -> list[dict[str, str]]:
    """RS training rows in RULE's ``reject_target.json`` schema (``instruction`` -> ``output``: a refusal naming
    the target, ``subject``, ``intro``, ``input``) from :func:`load_forget_questions`: question ``i`` gets
    refusal ``i mod len``, as RULE's file and the boundary rows of :func:`build_rebo_files` do."""
    questions, refusals, name, intro = load_forget_questions(target_dir, limit)
    return [
        {"input": "", "output": refusals[i % len(refusals)], "subject": name, "instruction": q, "intro": intro}
        for i, q in enumerate(questions)
    ]


def build_rebo_files(
    target_dir: Union[str, Path],
    out_dir: Union[str, Path],
    generate_fn: GenerateFn,
    *,
    limit: Optional[int] = None,
    boundary_ratio: Optional[float] = None,
    seed: int = 0,
    shuffle: bool = True,
    priming: str = "none",
    settings: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Synthesise the boundary set for one RWKU-layout target folder and write RULE's ReBO files to ``out_dir``.

    Writes ``reject_with_fb_neighbor_target.json`` (source rows), ``rl_rejection_with_fb_neighbor_target.json``
    (training, see :func:`data.rebo_rows.flatten_rebo_rows`), ``rl_rejection_eval_target.json`` (validation,
    from the folder's probes) and, last, ``synthesis_stats.json``; returns those stats (kept / filtered by
    reason, row counts, and ``settings``: priming, limit, boundary ratio, seed and the caller's ``settings``).
    """
    questions, refusals, name, intro = load_forget_questions(target_dir, limit)
    source, stats = synthesize_boundary(questions, name, generate_fn, refusals=refusals, intro=intro, priming=priming)
    train = flatten_rebo_rows(source, boundary_ratio=boundary_ratio, seed=seed, shuffle=shuffle)
    evaluation = build_eval_rows(target_dir, name)
    out = Path(out_dir)
    summary = stats.to_dict()
    for key, rows in (("train", train), ("eval", evaluation)):
        summary[f"{key}_rows"] = {label: sum(r["solution"][0] == label for r in rows) for label in (REJECT, NORMAL)}
    summary["settings"] = {"priming": priming, "limit": limit, "boundary_ratio": boundary_ratio, "seed": seed}
    summary["settings"].update(settings or {})
    write_json_atomic(out / "reject_with_fb_neighbor_target.json", source)
    write_json_atomic(out / "rl_rejection_with_fb_neighbor_target.json", train)
    write_json_atomic(out / "rl_rejection_eval_target.json", evaluation)
    write_json_atomic(out / "synthesis_stats.json", summary)
    return summary


# ----------------------------------------------------------------------------- CLI
def main(argv: Optional[list[str]] = None) -> None:
    from verl.utils.rwku_targets import select_targets

    parser = argparse.ArgumentParser(prog="python -m data.synthesis", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="instruction model: folder, hub id, 'smollm2' or 'tiny:DIR'")
    parser.add_argument("--data-dir", required=True, help="RWKU layout: the folder that holds Target/")
    parser.add_argument("--target", required=True, help="target selection, e.g. 1, 1-3, 'Stephen King'")
    parser.add_argument("--out", required=True, help="writes OUT/<n>_<Name>/*.json")
    parser.add_argument("--limit", type=int, default=None, help="only the first N forget questions per target")
    parser.add_argument("--boundary-ratio", type=float, default=None, help="boundary rows per forget row")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--sample", action="store_true", help="sample (T 0.7, top-p 0.9) instead of greedy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--priming", default="fields", choices=PRIMING_MODES,
                        help="start the assistant turn with the field labels (default fields; see data/generators.py)")  # fmt: skip
    args = parser.parse_args(argv)
    targets = select_targets(args.target, args.data_dir)
    generate_fn = hf_generate_fn(args.model, max_new_tokens=args.max_new_tokens, do_sample=args.sample, seed=args.seed)
    for target in targets:
        folder = Path(args.data_dir) / "Target" / target.dirname
        stats = build_rebo_files(
            folder, Path(args.out) / target.dirname, generate_fn, limit=args.limit,
            boundary_ratio=args.boundary_ratio, seed=args.seed, priming=args.priming,
            settings={"generator": args.model},
        )  # fmt: skip
        print(target.dirname, json.dumps(stats))


if __name__ == "__main__":
    main()
