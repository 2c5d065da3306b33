"""Collect per-target result JSONs of many models into the papers' tables and the forget-retain frontier.

``python -m verl.eval.collect RESULT_DIR [RESULT_DIR ...] --out DIR [--benchmark rwku|muse] [--label NAME=DIR ...]``

* Finds every ``*.json`` written by ``python -m verl.eval`` under the folders (recursively; hidden files and
  folders are skipped) and groups them per benchmark by model: the JSON's ``model`` field, or NAME for every
  file under a folder given as ``--label NAME=DIR``. Each metric is averaged over the targets a model has
  (``--common-targets``: only the targets every model of that benchmark has); a warning lists the models with
  fewer targets than the most complete one.
* A model's *method* (one Pareto series) is its name up to the last "/" (``rs/epoch2`` -> ``rs``), else its
  name without a checkpoint suffix (``rebo_step20`` -> ``rebo``, ``rs-epoch-2`` -> ``rs``, ``npo`` -> ``npo``).
* Refusal figures are by ``--refusal-detector`` (default ``strict``; results judged by another are re-judged from
  their predictions, :func:`~verl.eval.naturalness.metrics_judged_by`), named in the ``Detector`` column.
* Writes into ``--out`` (atomically): ``rwku_table1.{md,csv}`` (RWKU Table 1 columns, x100),
  ``rule_naturalness.{md,csv}`` (forget / refusal / naming / false refusal / neighbour / utility),
  ``muse_table.{md,csv}``, ``attacks.{md,csv}`` (models with ``attacks`` suite results, see
  :mod:`verl.eval.attack_table`; knowledge probe relative to ``--reference``), ``pareto.png`` +
  ``pareto_area.md`` (RWKU; ``muse_pareto.*`` for MUSE) and ``collected.json`` (every model's averaged
  metrics). Rows follow the order of the folders given (positional ones, then ``--label`` ones), then the
  model name.
* Pareto points: ``(forget, retain) = (F-All, N-All)`` pooled scores in ``[0, 1]`` for RWKU, ``(KnowMem-f,
  KnowMem-r)`` for MUSE (``--forget-key`` / ``--retain-key`` override); :mod:`verl.eval.pareto` plots them at
  ``(1 - forget, retain)`` (:mod:`verl.eval.pareto_plot`: one colour per method, its runs joined, the frontier
  over all runs; the ``--reference`` model, the one before unlearning, as a star rather than a method) and
  ``pareto_area.md`` compares each method's dominated area (defined in :mod:`verl.eval.pareto`) and the area
  above each retain threshold (the paper's Pareto-AUC).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from verl.eval.attack_table import write_attack_tables
from verl.eval.naturalness import metrics_judged_by
from verl.eval.pareto import AREA_MODES
from verl.eval.report import (
    COLUMNS,
    MUSE_COLUMNS,
    RWKU_COLUMNS,
    result_name,
    to_csv,
    to_markdown,
)
from verl.utils.fileio import write_json_atomic, write_text_atomic

NATURALNESS_COLUMNS = (  # (column, metric key, scale, always shown)
    ("F-All", "forget_all_pooled", 100, True),
    ("Refusal-F", "naturalness_refusal_rate_forget", 100, True),
    ("Named", "naturalness_named_refusal_share", 100, True),
    ("FalseRef-N", "naturalness_false_refusal_rate_neighbor", 100, True),
    ("N-All", "neighbor_all_pooled", 100, True),
    ("FalseRef-B", "naturalness_false_refusal_rate_boundary", 100, False),
    ("NewRef-F", "naturalness_new_refusal_rate_forget", 100, False),
    ("Kept-N", "naturalness_kept_answers_neighbor", 100, False),
    ("Ref-Flu", "naturalness_refusal_fluency", 100, False),
) + tuple(
    (name, key, scale, False) for name, key, scale in RWKU_COLUMNS if name in ("Gen", "Rea", "Tru", "Fac", "Flu")
)
PARETO_KEYS = {"rwku": ("forget_all_pooled", "neighbor_all_pooled"), "muse": ("muse_knowmem_f", "muse_knowmem_r")}
CHECKPOINT_SUFFIX = re.compile(r"[_-]*(?:global_step|step|epoch|ckpt|checkpoint|iter)[_-]*\d+$", re.IGNORECASE)
PathLike = Union[str, Path]


class CollectError(ValueError):
    """A bad input to :func:`collect`; the message is one line naming the file or folder."""


@dataclass
class ModelResults:
    """One model's results on one benchmark: ``metrics`` = per-key mean over ``targets`` (None values skipped)."""

    name: str
    benchmark: str
    order: int  # index of the first folder it was found in
    files: dict[str, Path] = field(default_factory=dict)  # target -> result JSON
    per_target: dict[str, dict] = field(default_factory=dict)  # target -> metrics
    metrics: dict[str, float] = field(default_factory=dict)
    averaged: list[str] = field(default_factory=list)  # the targets ``metrics`` averages over

    @property
    def method(self) -> str:
        return method_of(self.name)


def method_of(name: str) -> str:
    """``"rs/epoch2"`` -> ``"rs"``; ``"rebo_step20"`` -> ``"rebo"``; ``"npo"`` -> ``"npo"``."""
    stripped = name.rstrip("/")
    if "/" in stripped:
        return stripped.rsplit("/", 1)[0] or stripped
    return CHECKPOINT_SUFFIX.sub("", stripped) or stripped


def _json_files(folder: Path, skip: Optional[Path] = None) -> list[Path]:
    """Result JSONs under ``folder``, except hidden ones and those under the resolved folder ``skip`` (the
    output folder, whose ``collected.json`` a second run would otherwise read as a result)."""
    if not folder.is_dir():
        raise CollectError(f"result folder not found: {folder}")
    files = sorted(
        p
        for p in folder.rglob("*.json")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and (skip is None or not p.resolve().is_relative_to(skip))
    )
    if not files:
        raise CollectError(f"no result JSON (*.json) under {folder}")
    return files


def _read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CollectError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise CollectError(f"{path}: not a verl.eval result (missing 'metrics' object)")
    if result.get("benchmark") not in COLUMNS:
        raise CollectError(f"{path}: 'benchmark' must be one of {', '.join(COLUMNS)}, got {result.get('benchmark')!r}")
    return result


def load_models(
    folders: Sequence[PathLike],
    labels: Optional[Mapping[str, PathLike]] = None,
    benchmark: Optional[str] = None,
    common_targets: bool = False,
    skip: Optional[PathLike] = None,
    refusal_detector: str = "strict",
) -> dict[str, list[ModelResults]]:
    """``{benchmark: [ModelResults, ...]}`` in row order, each with its averaged ``metrics``.

    ``folders``: unlabelled result folders (model = each JSON's ``model`` field); ``labels``: ``{name: folder}``
    (every JSON under it belongs to ``name``). Raises :class:`CollectError` on a missing folder, a folder
    without JSON, a malformed JSON, or two results for the same (model, target). JSONs under ``skip`` are ignored.
    Refusal figures are those of ``refusal_detector`` (module docstring).
    """
    sources = [(Path(f), None) for f in folders] + [(Path(f), name) for name, f in (labels or {}).items()]
    if not sources:
        raise CollectError("no result folder given")
    claims: dict[Path, tuple[int, Optional[str], Path, Path]] = {}  # resolved -> (order, label, folder, path)
    skip_dir = Path(skip).resolve() if skip else None
    listed = [(order, folder, label, _json_files(folder, skip_dir)) for order, (folder, label) in enumerate(sources)]
    for order, folder, label, files in sorted(listed, key=lambda item: item[2] is None):  # labelled folders first
        for path in files:
            claims.setdefault(path.resolve(), (order, label, folder, path))  # a file under two folders counts once
    models: dict[tuple[str, str], ModelResults] = {}
    for order, label, folder, path in sorted(claims.values(), key=lambda c: (c[0], str(c[3]))):
        result = _read_result(path)
        if benchmark and result["benchmark"] != benchmark:
            continue
        name = label or result.get("model")
        if not isinstance(name, str) or not name.strip("/"):
            raise CollectError(f"{path}: no 'model' field; name its folder with --label NAME={folder}")
        key = (result["benchmark"], name.rstrip("/"))
        model = models.setdefault(key, ModelResults(key[1], key[0], order))
        target = result_name(result)
        if target in model.files:
            raise CollectError(
                f"two results for model {key[1]!r}, target {target!r}: {model.files[target]} and {path} "
                "(give each checkpoint's folder its own --label)"
            )
        model.files[target] = path
        try:
            model.per_target[target] = metrics_judged_by(result, refusal_detector)
        except ValueError as error:
            raise CollectError(f"{path}: {error}") from None
    if not models:
        what = f"{benchmark} results" if benchmark else "results"
        raise CollectError(f"no {what} under {', '.join(str(f) for f, _ in sources)}")
    grouped: dict[str, list[ModelResults]] = {}
    for model in sorted(models.values(), key=lambda m: (m.order, m.name)):
        grouped.setdefault(model.benchmark, []).append(model)
    for bench_models in grouped.values():
        shared = set.intersection(*(set(m.per_target) for m in bench_models)) if common_targets else None
        if shared is not None and not shared:
            raise CollectError(f"--common-targets: the {bench_models[0].benchmark} models share no target")
        for model in bench_models:
            targets = [t for t in sorted(model.per_target) if shared is None or t in shared]
            model.averaged = targets
            model.metrics = _mean_metrics([model.per_target[t] for t in targets])
            model.metrics["n_targets"] = len(targets)
    return grouped


def _mean_metrics(per_target: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for metrics in per_target:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                values.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in values.items()}


def coverage_warnings(models: Sequence[ModelResults]) -> list[str]:
    """One line per model with fewer targets than the most complete model of the same benchmark."""
    if not models:
        return []
    complete = max(models, key=lambda m: len(m.per_target))
    lines = []
    for model in models:
        missing = sorted(set(complete.per_target) - set(model.per_target))
        if len(model.per_target) < len(complete.per_target):
            lines.append(
                f"warning: {model.benchmark}: {model.name!r} has {len(model.per_target)} of "
                f"{len(complete.per_target)} targets ({complete.name!r}); missing: {', '.join(missing) or '-'}"
            )
    return lines


def model_table(models: Sequence[ModelResults], columns: Sequence[tuple]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): "Method", one column per ``(name, key, scale[, always])`` and "targets".

    A column whose ``always`` flag is False is left out when no model has its metric.
    """
    shown = [c for c in columns if len(c) < 4 or c[3] or any(c[1] in m.metrics for m in models)]
    header = ["Method"] + [c[0] for c in shown] + ["targets"]
    rows = []
    for model in models:
        cells = [model.metrics[c[1]] * c[2] if c[1] in model.metrics else None for c in shown]
        rows.append([model.name, *cells, int(model.metrics.get("n_targets", 0))])
    return header, rows


def _write_table(out: Path, stem: str, table: tuple[list[str], list[list[Any]]]) -> list[Path]:
    return [
        write_text_atomic(out / f"{stem}.md", to_markdown(*table)),
        write_text_atomic(out / f"{stem}.csv", to_csv(*table)),
    ]


def _write_pareto(
    out: Path,
    benchmark: str,
    models: Sequence[ModelResults],
    keys: tuple[str, str],
    thresholds,
    mode: str,
    reference: Optional[str] = None,
) -> list[Path]:
    """``pareto.png`` + ``pareto_area.md``; the ``reference`` model (before unlearning) is the plot's star."""
    from verl.eval.pareto import area_report, pareto_runs
    from verl.eval.pareto_plot import plot_frontier

    ref = next((m for m in models if m.name == reference and all(k in m.metrics for k in keys)), None)
    methods, warnings = pareto_runs([m for m in models if m is not ref], *keys)
    for line in warnings:
        print(line, file=sys.stderr)
    if not methods:
        return []
    prefix = "" if benchmark == "rwku" else f"{benchmark}_"
    png = out / f"{prefix}pareto.png"
    names = {key: name for name, key, _ in COLUMNS[benchmark]}
    axes = (names.get(keys[0], keys[0]), names.get(keys[1], keys[1]))
    point = (ref.metrics[keys[0]], ref.metrics[keys[1]]) if ref is not None else None
    try:
        plot_frontier(methods, png, thresholds, mode, f"{benchmark}: forget-retain trade-off", point, axes)
        report = area_report(methods, point, thresholds, mode, axes)
    except ValueError as error:
        raise CollectError(f"{benchmark} Pareto points ({keys[0]}, {keys[1]}): {error}") from None
    lines = [f"# Forget-retain areas ({benchmark})\n", report, "| method | model | forget x100 | retain x100 |",
             "|---|---|---|---|"]  # fmt: skip
    for m in models:
        if keys[0] in m.metrics and keys[1] in m.metrics:
            method = "(reference)" if m is ref else m.method
            lines.append(f"| {method} | {m.name} | {100 * m.metrics[keys[0]]:.1f} | {100 * m.metrics[keys[1]]:.1f} |")
    return [png, write_text_atomic(out / f"{prefix}pareto_area.md", "\n".join(lines) + "\n")]


def add_reference_metrics(models: Sequence[ModelResults], reference: str, detector: str = "strict") -> list[str]:
    """Add :func:`~verl.eval.naturalness.answer_retention` relative to model ``reference`` to every model's
    per-target metrics (targets the reference lacks are skipped, with a warning) and re-average."""
    from verl.eval.naturalness import answer_retention

    ref = next((m for m in models if m.name == reference), None)
    if ref is None:
        raise CollectError(f"--reference {reference!r} is not among the models: {', '.join(m.name for m in models)}")
    warnings, ref_results = [], {t: _read_result(p) for t, p in ref.files.items()}
    for model in models:
        for target, path in model.files.items():
            if target not in ref_results:
                warnings.append(f"warning: reference {reference!r} has no {target}; {model.name!r} not compared there")
                continue
            model.per_target[target] = {
                **model.per_target[target],
                **answer_retention(ref_results[target], _read_result(path), detector=detector),
            }
        model.metrics = {
            **_mean_metrics([model.per_target[t] for t in model.averaged]),
            "n_targets": len(model.averaged),
        }
    return warnings


def collect(
    folders: Sequence[PathLike],
    out: PathLike,
    benchmark: Optional[str] = None,
    labels: Optional[Mapping[str, PathLike]] = None,
    common_targets: bool = False,
    forget_key: Optional[str] = None,
    retain_key: Optional[str] = None,
    thresholds: Sequence[float] = (0.4, 0.5, 0.6, 0.7),
    area_mode: str = "restricted",
    reference: Optional[str] = None,
    refusal_detector: str = "strict",
) -> list[Path]:
    """Load, average and write every table and plot (module docstring) into ``out``; returns the written paths.
    ``reference``: a model name (the model before unlearning); adds the answer-retention columns relative to it
    (NewRef-F, Kept-N) and is drawn as the Pareto plot's reference star, not as a method.
    ``refusal_detector``: the detector of every refusal figure (re-judged where a result used another)."""
    if refusal_detector == "judge" and reference:  # answer_retention judges predictions afresh
        raise CollectError("--reference needs --refusal-detector strict or rule (a judge is not loaded here)")
    grouped = load_models(folders, labels, benchmark, common_targets, skip=out, refusal_detector=refusal_detector)
    if reference:
        for models in grouped.values():
            for line in add_reference_metrics(models, reference, refusal_detector):
                print(line, file=sys.stderr)
    out = Path(out)
    written: list[Path] = []
    for bench, models in grouped.items():
        for line in coverage_warnings(models):
            print(line, file=sys.stderr)
        if bench == "rwku":
            written += _write_table(out, "rwku_table1", model_table(models, RWKU_COLUMNS))
            header, rows = model_table(models, NATURALNESS_COLUMNS)
            written += _write_table(
                out, "rule_naturalness", (header + ["Detector"], [r + [refusal_detector] for r in rows])
            )
            ref = next((m.metrics for m in models if m.name == reference), None)
            written += write_attack_tables(out, [(m.name, m.metrics) for m in models], ref, reference)
        else:
            written += _write_table(out, "muse_table", model_table(models, MUSE_COLUMNS))
        keys = (forget_key or PARETO_KEYS[bench][0], retain_key or PARETO_KEYS[bench][1])
        written += _write_pareto(out, bench, models, keys, thresholds, area_mode, reference)
    summary = {
        bench: [
            {"name": m.name, "method": m.method, "targets": sorted(m.per_target),
             "files": [str(p) for p in m.files.values()], "metrics": m.metrics, "refusal_detector": refusal_detector}
            for m in models
        ]
        for bench, models in grouped.items()
    }  # fmt: skip
    written.append(write_json_atomic(out / "collected.json", summary))
    return written


def _parse_label(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--label expects NAME=DIR, got {text!r}")
    return name, folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m verl.eval.collect",
        description="Collect verl.eval result JSONs into the papers' tables and a forget-retain Pareto plot.",
    )
    parser.add_argument("folders", nargs="*", help="result folders (searched recursively for *.json)")
    parser.add_argument("--out", required=True, help="output folder for the tables and plots")
    parser.add_argument(
        "--benchmark", choices=sorted(COLUMNS), default=None, help="only this benchmark (default: all)"
    )
    parser.add_argument(
        "--label", action="append", type=_parse_label, default=[], metavar="NAME=DIR",
        help="every result under DIR belongs to model NAME (repeatable; 'method/ckpt' sets the Pareto series)",
    )  # fmt: skip
    parser.add_argument("--common-targets", action="store_true", help="average only over the targets every model has")
    parser.add_argument("--forget-key", default=None, help="metric on the Pareto forget axis (default per benchmark)")
    parser.add_argument("--retain-key", default=None, help="metric on the Pareto retain axis (default per benchmark)")
    parser.add_argument("--thresholds", default="0.4,0.5,0.6,0.7", help="retain thresholds (default 0.4,0.5,0.6,0.7)")
    parser.add_argument("--area-mode", choices=AREA_MODES, default="restricted", help="Pareto area mode")
    parser.add_argument(
        "--reference", default=None, metavar="NAME",
        help="model to compare against per probe (e.g. the model before unlearning): adds Kept-N (share of the "
        "neighbour probes it answered that are still answered) and NewRef-F (forget probes it answered, now refused); "
        "drawn as the reference star of the Pareto plot; the attack table's knowledge probe becomes a share of "
        "this model's",
    )  # fmt: skip
    parser.add_argument(
        "--refusal-detector", choices=["rule", "strict", "judge"], default="strict",
        help="detector of every refusal figure (default strict); results judged by another are re-judged from "
        "their stored predictions (judge: only results already judged by a judge)",
    )  # fmt: skip
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    except ValueError:
        parser.exit(2, f"error: --thresholds expects comma-separated numbers, got {args.thresholds!r}\n")
    labels: dict[str, str] = {}
    for name, folder in args.label:
        if name in labels:
            parser.exit(2, f"error: --label {name} given twice\n")
        labels[name] = folder
    try:
        written = collect(
            args.folders, args.out, args.benchmark, labels, args.common_targets,
            args.forget_key, args.retain_key, thresholds, args.area_mode, args.reference, args.refusal_detector,
        )  # fmt: skip
    except CollectError as error:
        parser.exit(2, f"error: {error}\n")
    for path in written:
        if path.suffix == ".md":
            print(f"## {path.name}\n\n{path.read_text(encoding='utf-8')}")
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
