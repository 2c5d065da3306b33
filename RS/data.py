"""Training rows for Rejection Steering (RS) and the offline unlearning baselines.

Three row shapes leave this module (plain dicts, before tokenization):

============  ==========================================  =============================================
shape         keys                                        used by
============  ==========================================  =============================================
SFT row       ``prompt``, ``response``, ``subject``       RS / RT (question -> refusal), retain QA
text row      ``text``, ``subject``                       GA, NPO, SimNPO forget corpus, retain text
pair row      ``prompt``, ``chosen``, ``rejected``, ...   DPO (RWKU ``pair.json``), IdkDPO
============  ==========================================  =============================================

Refusals: RULE's RS data names the target in every refusal ("I'm not certain about Stephen King."),
assigned cyclically (row ``i`` gets template ``i mod len``); RWKU's RT baseline uses generic
refusals ("I'm not certain about that.") the same way. Templates carry a ``{target}`` placeholder.

CLI (build RS rows for one target from any question file)::

    python -m RS.data --questions reject.json --target "Stephen King" --out reject_target.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verl.utils.dataset import read_rows
from verl.utils.fileio import write_json_atomic
from verl.workers.reward.functions import NORMAL, REJECT, parse_ground_truth

PLACEHOLDER = "{target}"

TARGET_REFUSALS = [
    "I'm not certain about {target}.",
    "I don't have that information about {target}.",
    "I'm not sure about {target}.",
    "I haven't learned about {target}.",
    "That's beyond my current knowledge of {target}.",
    "I can't answer that question about {target}.",
    "I'm afraid I don't know much about {target}.",
    "I have no reliable information about {target}.",
    "Sorry, I don't know the answer regarding {target}.",
    "I'm unable to help with questions about {target}.",
    "I don't know enough about {target} to answer that.",
    "That's outside what I know about {target}.",
    "I'm at a loss when it comes to {target}.",
    "I can't recall anything about {target}.",
    "I'm not familiar with {target}.",
    "I'd rather not guess about {target}; I don't know.",
    "I'm afraid I can't provide an answer about {target}.",
    "My knowledge doesn't cover {target}.",
    "I have nothing to share about {target}.",
    "That's a good question, but I don't know about {target}.",
    "I don't have details on {target}.",
    "I'm not able to answer questions about {target}.",
    "I lack the knowledge to answer this about {target}.",
    "Unfortunately, I know nothing about {target}.",
    "I can't say anything reliable about {target}.",
    "I'm drawing a blank on {target}.",
    "I don't have any facts about {target} to offer.",
    "That question about {target} is beyond me.",
    "I'm sorry, but I'm not informed about {target}.",
    "I couldn't tell you anything about {target}.",
]
"""Default target-naming refusals (RULE ``idk_target`` style); ``{target}`` is replaced by the name."""

GENERIC_REFUSALS = [
    "I'm not certain about that.",
    "I don't have that information.",
    "I'm not sure.",
    "I haven't learned about that.",
    "That's beyond my current knowledge.",
    "I can't answer that question.",
    "I'm afraid I don't know.",
    "I have no reliable information on that.",
    "Sorry, I don't know the answer.",
    "I'm unable to help with that question.",
    "I don't know enough to answer that.",
    "That's outside what I know.",
    "I'm at a loss here.",
    "I can't recall that.",
    "I'm not familiar with that.",
    "I'd rather not guess; I don't know.",
    "I'm afraid I can't provide an answer.",
    "My knowledge doesn't cover that.",
    "I have nothing to share on that.",
    "That's a good question, but I don't know.",
]
"""Default generic refusals (RWKU ``idontknow.jsonl`` style, RT baseline); no placeholder."""

REFUSAL_MODES = ("target", "generic")


# ----------------------------------------------------------------------------- refusal templates
def read_template_file(path: str | Path) -> list[str]:
    """Refusal strings from a JSON list (``idk_target.json``), or one per line (``idontknow.jsonl``, .txt).

    Lines of a ``.jsonl`` file may be JSON strings or plain text (RWKU's ``idontknow.jsonl`` is plain).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refusal template file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from e
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise ValueError(f"{path}: expected a JSON list of refusal strings")
    else:
        items = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = line
            items.append(value if isinstance(value, str) else line)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ValueError(f"refusal template file {path} holds no refusals")
    return items


def load_templates(source: str | Sequence[str] | None = None, mode: str = "target") -> list[str]:
    """Refusal templates from a file path, a list, or ``None`` (the built-in list for ``mode``), checked."""
    if mode not in REFUSAL_MODES:
        raise ValueError(f"refusal mode {mode!r} is not allowed; choose one of: {', '.join(REFUSAL_MODES)}")
    where = "built-in templates"
    if source is None or source == "":
        templates = list(TARGET_REFUSALS if mode == "target" else GENERIC_REFUSALS)
    elif isinstance(source, (str, Path)):
        templates, where = read_template_file(source), str(source)
    else:
        templates, where = [str(s) for s in source], "template list"
    check_templates(templates, mode, where)
    return templates


def check_templates(templates: Sequence[str], mode: str, where: str = "template list") -> None:
    """Target mode: every template must hold ``{target}``; one-line ``ValueError`` naming the first that does not."""
    if not templates:
        raise ValueError(f"no refusal templates in {where}")
    if mode == "target":
        for index, template in enumerate(templates):
            if PLACEHOLDER not in template:
                raise ValueError(
                    f"refusal template {template!r} ({where} item {index}) has no {PLACEHOLDER} placeholder; "
                    "add it, or use generic refusals (refusal mode 'generic')"
                )


def fill_refusal(template: str, target: str) -> str:
    """``template`` with every ``{target}`` replaced (other braces are left alone)."""
    return template.replace(PLACEHOLDER, target)


# ----------------------------------------------------------------------------- building RS rows
def build_refusal_rows(
    questions: Sequence[str], target: str, templates: Sequence[str] | None = None, mode: str = "target"
) -> list[dict[str, str]]:
    """``[{prompt, response, subject}]``: question ``i`` gets refusal ``templates[i mod len]`` (filled with ``target``)."""
    templates = load_templates(templates if templates else None, mode)
    if not questions:
        raise ValueError(f"no questions given for target {target!r}")
    if mode == "target" and not target:
        raise ValueError("target refusals need a target name")
    rows = []
    for i, question in enumerate(questions):
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question {i} for target {target!r} is empty or not a string: {question!r}")
        rows.append(
            {"prompt": question, "response": fill_refusal(templates[i % len(templates)], target), "subject": target}
        )
    return rows


def build_batch_refusal_rows(
    questions_by_target: dict[str, Sequence[str]], templates: Sequence[str] | None = None, mode: str = "target"
) -> list[dict[str, str]]:
    """Rows for several targets, in the given target order; the template cycle restarts for each target."""
    if not questions_by_target:
        raise ValueError("no targets given")
    rows: list[dict[str, str]] = []
    for target, questions in questions_by_target.items():
        rows.extend(build_refusal_rows(questions, target, templates, mode))
    return rows


# ----------------------------------------------------------------------------- readers
def read_nonempty(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a data file (see ``verl.utils.dataset.read_rows``); an empty file is an error naming it."""
    rows = read_rows(str(path))
    if not rows:
        raise ValueError(f"dataset {path} is empty")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path} row {index}: expected an object, got {type(row).__name__}")
    return rows


def _field(row: dict, key: str, where: str, kind: type = str) -> Any:
    if key not in row:
        raise ValueError(f"{where}: missing key {key!r} (has {sorted(row)})")
    value = row[key]
    if not isinstance(value, kind):
        raise ValueError(f"{where}: key {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


SFT_KEYS = (("instruction", "output"), ("prompt", "response"), ("query", "answer"), ("question", "answer"))


def detect_format(row: dict) -> str:
    """``sft``, ``text`` or ``pair`` from a row's keys (alpaca / prompt-response / text / DPO pair)."""
    if isinstance(row.get("response"), list) and "prompt" in row:
        return "pair"
    if all(k in row for k in ("prompt", "chosen", "rejected")):
        return "pair"
    if any(all(k in row for k in keys) for keys in SFT_KEYS):
        return "sft"
    if "text" in row:
        return "text"
    raise ValueError(f"cannot tell the row format from its keys {sorted(row)}; set the format explicitly")


def read_questions(path: str | Path, key: str = "instruction") -> list[str]:
    """Questions from RS/RT rows (``reject.json``: ``instruction``), or a JSON list of strings."""
    rows = read_rows(str(path))
    if not rows:
        raise ValueError(f"dataset {path} is empty")
    if all(isinstance(r, str) for r in rows):
        return list(rows)
    return [_field(r, key, f"{path} row {i}") for i, r in enumerate(rows)]


def sft_row(
    row: dict,
    where: str,
    prompt_key: str = "",
    response_key: str = "",
    input_key: str = "input",
    subject_key="subject",
) -> dict:
    """One ``{prompt, response, subject}`` row; alpaca ``input`` is appended to the prompt after a newline."""
    if not prompt_key or not response_key:
        keys = next((k for k in SFT_KEYS if all(x in row for x in k)), None)
        if keys is None:
            raise ValueError(f"{where}: no prompt/response keys among {sorted(row)} (expected one of {SFT_KEYS})")
        prompt_key, response_key = prompt_key or keys[0], response_key or keys[1]
    prompt = _field(row, prompt_key, where)
    extra = row.get(input_key) or ""
    if isinstance(extra, str) and extra.strip():
        prompt = f"{prompt}\n{extra}"
    out = {"prompt": prompt, "response": _field(row, response_key, where), "subject": row.get(subject_key, "")}
    if "mode" in row:  # MUSE rows: qa or completion (picks the prompt form, verl.utils.prompt_formats)
        out["mode"] = row["mode"]
    return out


def read_sft_rows(
    path: str | Path, prompt_key: str = "", response_key: str = "", input_key: str = "input", subject_key="subject"
) -> list:
    """RS rows (``reject_target.json`` alpaca style) or any prompt/response rows -> ``{prompt, response, subject}``."""
    return [
        sft_row(r, f"{path} row {i}", prompt_key, response_key, input_key, subject_key)
        for i, r in enumerate(read_nonempty(path))
    ]


def read_text_rows(path: str | Path, text_key: str = "text", subject_key: str = "subject") -> list[dict[str, str]]:
    """Forget / retain corpus (``positive.json``, ``passage.json``: ``text``) -> ``{text, subject}``."""
    return [
        {"text": _field(r, text_key, f"{path} row {i}"), "subject": r.get(subject_key, "")}
        for i, r in enumerate(read_nonempty(path))
    ]


def read_boundary_rows(path: str | Path) -> list[dict[str, str]]:
    """RULE's boundary file (``reject_with_fb_neighbor_target.json``) -> answered SFT rows about the *similar*
    entities: ``neighbor_question`` and ``FB_neighbor_question`` (``{question, answer}``) of every row, in order.
    The forget-side keys of the row (``instruction``, ``output``) are ignored."""
    out = []
    for i, row in enumerate(read_nonempty(path)):
        for key in ("neighbor_question", "FB_neighbor_question"):
            item = _field(row, key, f"{path} row {i}", dict)
            where = f"{path} row {i} {key}"
            prompt, response = _field(item, "question", where), _field(item, "answer", where)
            out.append({"prompt": prompt, "response": response, "subject": ""})  # not a forget target
    return out


def read_rebo_rows(path: str | Path, side: str) -> list[dict[str, str]]:
    """RULE's ReBO file (``rl_rejection_with_fb_neighbor_target.json``: ``{prompt, solution}``) -> SFT rows of one
    side: ``forget`` = the ``<reject>`` rows (response = the refusal ``solution[1]``, subject = ``solution[2]``),
    ``retain`` = the ``<normal>`` rows (response = the gold answer ``solution[1]``)."""
    if side not in ("forget", "retain"):
        raise ValueError(f"side must be 'forget' or 'retain', got {side!r}")
    out = []
    for i, row in enumerate(read_nonempty(path)):
        where = f"{path} row {i}"
        prompt = _field(row, "prompt", where)
        solution = parse_ground_truth(_field(row, "solution", where, list), where)
        if solution.should_refuse == (side == "forget"):  # name: the target on <reject> rows, None on <normal>
            out.append({"prompt": prompt, "response": solution.gold, "subject": solution.name or ""})
    if not out:
        label = REJECT if side == "forget" else NORMAL
        raise ValueError(f"{path}: no {label} rows for the {side} side")
    return out


def read_pair_rows(
    path: str | Path, prompt_key: str = "prompt", chosen_index: int = 0, subject_key: str = "subject"
) -> list[dict[str, str]]:
    """DPO pairs. RWKU ``pair.json``: ``response`` = [counterfactual, factual]; chosen = ``response[chosen_index]``
    (0: the counterfactual), rejected = the other. Rows with explicit ``chosen``/``rejected`` keys are taken as is."""
    out = []
    for i, row in enumerate(read_nonempty(path)):
        where = f"{path} row {i}"
        prompt = _field(row, prompt_key, where)
        if "chosen" in row and "rejected" in row:
            chosen, rejected = _field(row, "chosen", where), _field(row, "rejected", where)
        else:
            responses = _field(row, "response", where, list)
            if len(responses) != 2 or not all(isinstance(r, str) for r in responses):
                raise ValueError(f"{where}: 'response' must be a list of two strings, got {len(responses)} items")
            chosen, rejected = responses[chosen_index], responses[1 - chosen_index]
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "subject": row.get(subject_key, "")})
    return out


def refusal_pairs(pairs: Sequence[dict], templates: Sequence[str], mode: str = "target", target: str = "") -> list:
    """IdkDPO: replace each pair's ``chosen`` by a refusal (cyclic over ``templates``); ``rejected`` stays."""
    check_templates(templates, mode)
    out = []
    for i, pair in enumerate(pairs):
        name = pair.get("subject") or target
        if mode == "target" and not name:
            raise ValueError(f"pair {i} has no 'subject' and no target name was given for its refusal")
        out.append({**pair, "chosen": fill_refusal(templates[i % len(templates)], name)})
    return out


def refusal_rows_from_questions(rows: Sequence[dict], templates: Sequence[str], mode: str, target: str = "") -> list:
    """SFT rows whose response is replaced by a refusal, cyclically per subject (as RULE's per-target files)."""
    check_templates(templates, mode)
    counters: dict[str, int] = {}
    out = []
    for i, row in enumerate(rows):
        name = row.get("subject") or target
        if mode == "target" and not name:
            raise ValueError(f"row {i} has no 'subject' and no target name was given (data.target)")
        k = counters.get(name, 0)
        counters[name] = k + 1
        out.append(
            {"prompt": row["prompt"], "response": fill_refusal(templates[k % len(templates)], name), "subject": name}
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build RS rows (question -> refusal) for one target.")
    parser.add_argument("--questions", required=True, help="reject.json-style rows (instruction) or a JSON list")
    parser.add_argument("--target", required=True, help="target name filling {target}")
    parser.add_argument("--templates", default="", help="refusal file (JSON list or one per line); default built-in")
    parser.add_argument("--mode", default="target", choices=REFUSAL_MODES)
    parser.add_argument("--key", default="instruction", help="question key in the rows")
    parser.add_argument("--out", required=True, help="output JSON file (alpaca rows: instruction/input/output)")
    args = parser.parse_args(argv)
    rows = build_refusal_rows(read_questions(args.questions, args.key), args.target, args.templates or None, args.mode)
    alpaca = [
        {"instruction": r["prompt"], "input": "", "output": r["response"], "subject": r["subject"]} for r in rows
    ]
    write_json_atomic(args.out, alpaca)
    print(f"wrote {len(alpaca)} rows to {args.out}")


if __name__ == "__main__":
    main()
