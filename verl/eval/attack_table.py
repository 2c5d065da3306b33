"""The attack table (``attacks.md`` / ``attacks.csv``): one row per model, one column per attack.

Rows are ``(name, metrics)`` pairs: a model's ``attacks`` suite metrics (``verl.eval.collect`` passes each
model's target-averaged metrics, the demo its results). Markdown, two tables, every number x100:

* **generation**: per attack a cell ``forget / neighbour`` = ROUGE-L recall on the held-out forget probes
  (what the attack recovers; compare with ``direct``) / on the neighbour probes (what it does to them);
* **knowledge probe**: the gold answer's per-token probability under teacher forcing, ``forget /
  neighbour``, for the model as it is and after each weight attack; with a reference (the model before
  unlearning) as a share of the reference's unchanged value (:func:`knowledge_relative`: 100 = as likely
  as before unlearning), else the raw probability.

The CSV has one numeric column per (attack, group): ``<attack> F`` / ``<attack> N`` and the knowledge
columns ``<attack> K-F`` / ``<attack> K-N`` (relative when a reference is given, as in the markdown).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from verl.eval.report import to_csv
from verl.utils.fileio import write_text_atomic

GENERATION_ATTACKS = {"direct": "direct", "prefill": "prefill", "prefill_answer": "prefill answer",
                      "multi_turn": "multi-turn", "quant8": "8-bit", "quant4": "4-bit", "relearn": "relearn",
                      "relearn_benign": "relearn benign"}  # fmt: skip
KNOWLEDGE_ATTACKS = {"knowledge": "unchanged", "quant8": "8-bit", "quant4": "4-bit", "relearn": "relearn",
                     "relearn_benign": "relearn benign"}  # fmt: skip
Row = tuple[str, Mapping[str, Any]]


def has_attacks(metrics: Mapping[str, Any]) -> bool:
    return isinstance(metrics.get("attack_direct_forget"), (int, float))


def knowledge_relative(reference: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, float]:
    """``<key>_relative`` = ``metrics[key] / reference["attack_knowledge_<group>"]`` for every knowledge
    probability in ``metrics`` (the unchanged model's and each weight attack's); left out where the reference
    lacks the value, it is 0, or it was measured on another number of held-out probes."""
    if reference.get("attack_n_heldout") != metrics.get("attack_n_heldout"):
        return {}
    relative = {}
    for key, value in metrics.items():
        match = re.fullmatch(r"attack_(?:\w+_)?knowledge_(forget|neighbor)", key)
        base = reference.get(f"attack_knowledge_{match.group(1)}") if match else None
        if match and isinstance(value, (int, float)) and base:
            relative[f"{key}_relative"] = value / base
    return relative


def _knowledge_key(attack: str, group: str, relative: bool) -> str:
    key = "attack_knowledge_" + group if attack == "knowledge" else f"attack_{attack}_knowledge_{group}"
    return key + "_relative" if relative else key


def _columns(rows: Sequence[Row], relative: bool) -> list[tuple[str, str]]:
    """(CSV header, metric key) of every attack column some row has."""
    columns = []
    for attack, label in GENERATION_ATTACKS.items():
        columns += [(f"{label} {g[0].upper()}", f"attack_{attack}_{g}") for g in ("forget", "neighbor")]
    for attack, label in KNOWLEDGE_ATTACKS.items():
        columns += [(f"{label} K-{g[0].upper()}", _knowledge_key(attack, g, relative)) for g in ("forget", "neighbor")]
    return [(header, key) for header, key in columns if any(key in metrics for _, metrics in rows)]


def _with_relative(rows: Sequence[Row], reference: Optional[Mapping[str, Any]]) -> list[Row]:
    if reference is None:
        return list(rows)
    return [(name, {**metrics, **knowledge_relative(reference, metrics)}) for name, metrics in rows]


def attack_csv_table(rows: Sequence[Row], reference: Optional[Mapping[str, Any]] = None) -> tuple[list, list]:
    """(header, rows) for ``attacks.csv``: Method, the attack columns x100, and ``targets`` when known."""
    rows = _with_relative(rows, reference)
    columns = _columns(rows, reference is not None)
    with_targets = any("n_targets" in metrics for _, metrics in rows)
    header = ["Method"] + [h for h, _ in columns] + (["targets"] if with_targets else [])
    body = []
    for name, metrics in rows:
        cells = [100 * metrics[key] if isinstance(metrics.get(key), (int, float)) else None for _, key in columns]
        body.append([name, *cells] + ([int(metrics.get("n_targets", 0))] if with_targets else []))
    return header, body


def _cell(metrics: Mapping[str, Any], forget_key: str, neighbor_key: str) -> str:
    values = [metrics.get(forget_key), metrics.get(neighbor_key)]
    return " / ".join("–" if not isinstance(v, (int, float)) else f"{100 * v:.1f}" for v in values)


def attack_markdown(
    rows: Sequence[Row], reference: Optional[Mapping[str, Any]] = None, reference_name: Optional[str] = None
) -> str:
    """The two markdown tables (module docstring), each column shown when some row has it."""
    rows = _with_relative(rows, reference)
    relative = reference is not None
    parts = []
    for title, attacks, keys in (
        ("Attacks: ROUGE-L recall x100, held-out forget probes / neighbour probes (direct = no attack)",
         GENERATION_ATTACKS, lambda a: (f"attack_{a}_forget", f"attack_{a}_neighbor")),
        ("Knowledge probe: gold-answer token probability, held-out forget / neighbour, "
         + (f"% of {reference_name or 'the reference'}'s unchanged model" if relative else "x100"),
         KNOWLEDGE_ATTACKS, lambda a: (_knowledge_key(a, "forget", relative), _knowledge_key(a, "neighbor", relative))),
    ):  # fmt: skip
        shown = [(a, label) for a, label in attacks.items() if any(keys(a)[0] in m for _, m in rows)]
        if not shown:
            continue
        lines = [f"{title}\n", "| Method | " + " | ".join(label for _, label in shown) + " |"]
        lines.append("|" + "---|" * (len(shown) + 1))
        lines += [f"| {name} | " + " | ".join(_cell(m, *keys(a)) for a, _ in shown) + " |" for name, m in rows]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def write_attack_tables(
    out: Path, rows: Sequence[Row], reference: Optional[Mapping[str, Any]] = None, reference_name: Optional[str] = None
) -> list[Path]:
    """``attacks.md`` and ``attacks.csv`` in ``out`` (atomically) for the rows that have attack metrics."""
    rows = [(name, metrics) for name, metrics in rows if has_attacks(metrics)]
    if not rows:
        return []
    return [
        write_text_atomic(Path(out) / "attacks.md", attack_markdown(rows, reference, reference_name)),
        write_text_atomic(Path(out) / "attacks.csv", to_csv(*attack_csv_table(rows, reference))),
    ]
