"""RULE's ReBO rows: the training file from boundary-source rows, the validation file from RWKU's probes.

* :func:`flatten_rebo_rows`: boundary-source rows (``reject_with_fb_neighbor_target.json`` schema) ->
  ``{prompt, solution}`` training rows (``rl_rejection_with_fb_neighbor_target.json``): forget questions and
  their fill-in-the-blank rewrites -> ``["<reject>", refusal, target]``, neighbour questions -> ``["<normal>", answer]``;
* :func:`probe_eval_rows` / :func:`build_eval_rows`: the validation rows (``rl_rejection_eval_target.json``)
  from a target's forget and neighbour probes.

Both reproduce RULE's released files exactly (tests/data/test_rebo_rows.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

REJECT, NORMAL = "<reject>", "<normal>"


def _text(row: dict, key: str, index: int, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where or 'boundary rows'}: row {index} has no non-empty string {key!r}")
    return value


def flatten_rebo_rows(
    source_rows: Sequence[dict],
    *,
    boundary_ratio: Optional[float] = None,
    seed: int = 0,
    shuffle: bool = True,
    where: str = "",
) -> list[dict]:
    """ReBO training rows ``{prompt, solution}`` from boundary-source rows.

    Per source row, in RULE's file order: ``FB_instruction`` and ``instruction`` -> ``["<reject>", output,
    subject]``, then ``neighbor_question`` and ``FB_neighbor_question`` -> ``["<normal>", answer]`` (absent
    parts skipped). ``boundary_ratio`` = boundary rows per forget row: None keeps every boundary row, a
    number keeps a seeded sample of ``round(ratio * n_forget)`` of them (capped at what exists). ``shuffle``
    shuffles all rows with ``seed`` (RULE's own file keeps groups of four in source order: ``shuffle=False``).
    """
    groups: list[list[tuple[str, dict]]] = []
    for i, row in enumerate(source_rows):
        refusal, name = _text(row, "output", i, where), _text(row, "subject", i, where)
        group = []
        for key in ("FB_instruction", "instruction"):
            if key in row:
                group.append(("f", {"prompt": _text(row, key, i, where), "solution": [REJECT, refusal, name]}))
        for key in ("neighbor_question", "FB_neighbor_question"):
            if key in row:
                item = row[key]
                if not isinstance(item, dict):
                    raise ValueError(f"{where or 'boundary rows'}: row {i} {key!r} must be {{question, answer}}")
                question, answer = _text(item, "question", i, where), _text(item, "answer", i, where)
                group.append(("b", {"prompt": question, "solution": [NORMAL, answer]}))
        groups.append(group)
    rng = random.Random(seed)
    flat = [(kind, row) for group in groups for kind, row in group]
    boundary = [i for i, (kind, _) in enumerate(flat) if kind == "b"]
    if boundary_ratio is not None:
        if boundary_ratio < 0:
            raise ValueError(f"boundary_ratio must be >= 0, got {boundary_ratio}")
        n_forget = len(flat) - len(boundary)
        boundary = rng.sample(boundary, min(len(boundary), round(boundary_ratio * n_forget)))
    keep = set(boundary)
    rows = [row for i, (kind, row) in enumerate(flat) if kind == "f" or i in keep]
    if shuffle:
        rng.shuffle(rows)
    return rows


def probe_eval_rows(target: str, forget_levels: Sequence[Sequence[dict]], neighbour_levels: Sequence[Sequence[dict]]):
    """ReBO validation rows: every forget probe -> ``["<reject>", answer, target]``, then every neighbour probe
    -> ``["<normal>", answer]`` (RULE's ``rl_rejection_eval_target.json`` order)."""
    rows = []
    for label, levels in ((REJECT, forget_levels), (NORMAL, neighbour_levels)):
        for level, probes in enumerate(levels):
            for i, probe in enumerate(probes):
                where = f"{'forget' if label == REJECT else 'neighbour'} level list {level}"
                query, answer = _text(probe, "query", i, where), _text(probe, "answer", i, where)
                rows.append(
                    {"prompt": query, "solution": [label, answer, target] if label == REJECT else [label, answer]}
                )
    return rows


def build_eval_rows(target_dir: Union[str, Path], target: Optional[str] = None) -> list[dict]:
    """:func:`probe_eval_rows` from a target folder's ``forget_level1-3`` and ``neighbor_level1-2`` files."""
    from verl.eval.datasets import read_records

    folder = Path(target_dir)
    forget = [read_records(folder / f"forget_level{i}.json", ("query", "answer")) for i in (1, 2, 3)]
    neighbour = [read_records(folder / f"neighbor_level{i}.json", ("query", "answer")) for i in (1, 2)]
    name = target or next((p.get("subject") for level in forget for p in level if p.get("subject")), None)
    if not name:
        raise ValueError(f"{folder}: no target name given and no 'subject' in the forget probes")
    return probe_eval_rows(name, forget, neighbour)
