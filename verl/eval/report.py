"""Writing evaluation outputs: one JSON per (model, target) and aggregate tables in the papers' layouts.

* :func:`write_result` stores a :func:`~verl.eval.suites.run_suites` result (every metric and every probe's
  prompt, generation and score) at ``<out>/<model_tag>/<target dirname | muse_<corpus>>.json``, atomically
  (temporary file + ``os.replace``), NaN written as ``null``.
* :func:`summary_table` builds RWKU Table 1's columns (F-FB, F-QA, F-AA, F-All, N-FB, N-QA, N-All, FM, RM, Gen,
  Rea, Tru, Fac, Flu; x100 like the paper, FM/RM = mean token NLL x100) plus the macro "All" variants, one row
  per target and a mean row; or MUSE's columns (VerbMem-f, KnowMem-f, PrivLeak, KnowMem-r).
  :func:`write_summary` saves it as ``summary.md`` and ``summary.csv`` beside the JSON files.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from verl.utils.fileio import write_json_atomic, write_text_atomic  # noqa: F401  (re-exported)

# (column, metric key, scale)
RWKU_COLUMNS = (
    ("F-FB", "forget_fb", 100),
    ("F-QA", "forget_qa", 100),
    ("F-AA", "forget_aa", 100),
    ("F-All", "forget_all_pooled", 100),
    ("N-FB", "neighbor_fb", 100),
    ("N-QA", "neighbor_qa", 100),
    ("N-All", "neighbor_all_pooled", 100),
    ("FM", "mia_fm_nll", 100),
    ("RM", "mia_rm_nll", 100),
    ("Gen", "mmlu_acc", 100),
    ("Rea", "bbh_em", 100),
    ("Tru", "truthfulqa_mc1", 100),
    ("Fac", "triviaqa_f1", 100),
    ("Flu", "fluency_entropy", 100),
    ("F-All(macro)", "forget_all_macro", 100),
    ("N-All(macro)", "neighbor_all_macro", 100),
)
MUSE_COLUMNS = (
    ("VerbMem-f", "muse_verbmem_f", 100),
    ("KnowMem-f", "muse_knowmem_f", 100),
    ("PrivLeak", "muse_privleak", 1),
    ("KnowMem-r", "muse_knowmem_r", 100),
)
COLUMNS = {"rwku": RWKU_COLUMNS, "muse": MUSE_COLUMNS}


def model_tag(model: str) -> str:
    """A file-system-safe name for a model path or name ("/x/checkpoints/step_20/" -> "step_20")."""
    name = Path(str(model).rstrip("/")).name or str(model)
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name) or "model"


def result_name(result: dict) -> str:
    if result.get("target"):
        return result["target"]["dirname"]
    return f"{result['benchmark']}_{result.get('options', {}).get('muse_corpus', 'books')}"


def write_result(out_dir: Union[str, Path], model: str, result: dict) -> Path:
    """``<out_dir>/<model_tag>/<target dirname or muse_books>.json``; ``model`` is recorded in the file."""
    return write_json_atomic(
        Path(out_dir) / model_tag(model) / f"{result_name(result)}.json", {"model": model} | result
    )


def _row_label(result: dict) -> str:
    target = result.get("target")
    return f"{target['index']} {target['name']}" if target else result_name(result)


def summary_table(results: Sequence[dict], benchmark: Optional[str] = None) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): one row per result plus a "mean" row (mean over the results that have each metric)."""
    benchmark = benchmark or (results[0]["benchmark"] if results else "rwku")
    columns = COLUMNS[benchmark]
    header = ["target"] + [name for name, _, _ in columns]
    rows, per_column = [], [[] for _ in columns]
    for result in results:
        row: list[Any] = [_row_label(result)]
        for position, (_, key, scale) in enumerate(columns):
            value = result["metrics"].get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                row.append(None)
            else:
                row.append(value * scale)
                per_column[position].append(value * scale)
        rows.append(row)
    if len(results) > 1:
        rows.append(["mean"] + [sum(v) / len(v) if v else None for v in per_column])
    return header, rows


def _format(value: Any) -> str:
    return "" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def to_markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_format(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for v in row] for row in rows])
    return buffer.getvalue()


def write_summary(
    folder: Union[str, Path], results: Sequence[dict], benchmark: Optional[str] = None
) -> tuple[Path, Path]:
    """``summary.md`` and ``summary.csv`` in ``folder``; returns their paths."""
    header, rows = summary_table(results, benchmark)
    folder = Path(folder)
    return (
        write_text_atomic(folder / "summary.md", to_markdown(header, rows)),
        write_text_atomic(folder / "summary.csv", to_csv(header, rows)),
    )
