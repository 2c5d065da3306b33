"""How well each refusal detector agrees with the labelled replies of ``data/refusal_labels.jsonl``.

``python -m data.refusal_accuracy [--labels FILE] [--detectors rule,strict] [--judge-model PATH] [--errors]``
prints a markdown table: per detector and split, the number of replies, accuracy, precision and recall
(refusal = the positive class), and with ``--errors`` every reply a detector gets wrong.

The labelled set (``data/README.md`` describes it): one JSON object per line with ``text`` (a reply), ``label``
(true = a refusal), ``source`` (where the reply comes from) and ``split``, optionally ``target`` (the forget
target the reply is about). Splits, in the order they were written: ``dev`` (written before the ``strict``
detector was first run; used to develop it), ``holdout`` (written after that, measured once, then used for one
round of fixes), ``fresh`` (written after the last change to ``strict``; never used to change it).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

LABELS = Path(__file__).resolve().parent / "refusal_labels.jsonl"
SPLITS = ("dev", "holdout", "fresh")
REQUIRED = {"text": str, "label": bool, "source": str, "split": str}


def load_labels(path: Path | str = LABELS) -> list[dict]:
    """The labelled rows of ``path``; ``ValueError`` naming the file and line of a malformed or duplicate row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled refusal set not found: {path}")
    rows, seen = [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        for key, kind in REQUIRED.items():
            if not isinstance(row.get(key), kind):
                raise ValueError(f"{where}: {key!r} must be a {kind.__name__}, got {row.get(key)!r}")
        if row["split"] not in SPLITS:
            raise ValueError(f"{where}: split must be one of {', '.join(SPLITS)}, got {row['split']!r}")
        if "target" in row and not isinstance(row["target"], str):
            raise ValueError(f"{where}: 'target' must be a str, got {row['target']!r}")
        if row["text"] in seen:
            raise ValueError(f"{where}: the same text as line {seen[row['text']]}")
        seen[row["text"]] = number
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no labelled rows")
    return rows


def scores(labels: Sequence[bool], predictions: Sequence[bool]) -> dict[str, float]:
    """``n``, ``accuracy``, ``precision`` and ``recall`` of ``predictions`` (refusal = positive); a precision or
    recall over no positive is None."""
    pairs = list(zip(labels, predictions, strict=True))
    true_pos = sum(label and pred for label, pred in pairs)
    predicted, actual = sum(pred for _, pred in pairs), sum(label for label, _ in pairs)
    return {
        "n": len(pairs),
        "accuracy": sum(label == pred for label, pred in pairs) / len(pairs) if pairs else None,
        "precision": true_pos / predicted if predicted else None,
        "recall": true_pos / actual if actual else None,
    }


def evaluate(rows: Sequence[dict], detectors: dict[str, Callable[[str], bool]]) -> dict[str, dict]:
    """``{detector: {"all" | split: scores, "errors": [rows it gets wrong]}}``."""
    from verl.workers.reward.refusal import detect_all

    report = {}
    for name, detector in detectors.items():
        predictions = detect_all(detector, [r["text"] for r in rows])
        entry = {"all": scores([r["label"] for r in rows], predictions)}
        for split in SPLITS:
            chosen = [(r["label"], p) for r, p in zip(rows, predictions) if r["split"] == split]
            if chosen:
                entry[split] = scores([label for label, _ in chosen], [p for _, p in chosen])
        entry["errors"] = [r for r, p in zip(rows, predictions) if p != r["label"]]
        report[name] = entry
    return report


def accuracy(detector: str = "strict", path: Path | str = LABELS, split: Optional[str] = None) -> float:
    """The accuracy of the registered ``detector`` on the labelled set (one ``split``, or all of it)."""
    from verl.workers.reward.refusal import get_detector

    rows = [r for r in load_labels(path) if split is None or r["split"] == split]
    return evaluate(rows, {detector: get_detector(detector)})[detector]["all"]["accuracy"]


def markdown(report: dict[str, dict]) -> str:
    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = ["| detector | split | n | accuracy | precision | recall |", "|---|---|---|---|---|---|"]
    for name, entry in report.items():
        for split in ("all", *SPLITS):
            if split in entry:
                s = entry[split]
                lines.append(
                    f"| {name} | {split} | {s['n']} | {cell(s['accuracy'])} | {cell(s['precision'])} | "
                    f"{cell(s['recall'])} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.refusal_accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", default=str(LABELS), help=f"labelled JSONL (default {LABELS.name})")
    parser.add_argument("--detectors", default="rule,strict", help="comma list of rule, strict (default both)")
    parser.add_argument("--judge-model", default=None, help="also score the judge detector on this HF chat model")
    parser.add_argument("--errors", action="store_true", help="list every reply a detector gets wrong")
    args = parser.parse_args(argv)
    from verl.workers.reward.refusal import get_detector

    try:
        rows = load_labels(args.labels)
        detectors = {name: get_detector(name) for name in args.detectors.split(",") if name and name != "judge"}
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    if args.judge_model:
        from verl.eval.judge import load_judge

        detectors["judge"] = load_judge(args.judge_model)
    report = evaluate(rows, detectors)
    print(markdown(report))
    if args.errors:
        for name, entry in report.items():
            for row in entry["errors"]:
                print(f"{name}: label={row['label']} [{row['split']}/{row['source']}] {row['text']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
