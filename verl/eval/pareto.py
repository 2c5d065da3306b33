"""Forget-retain Pareto frontier and its areas (RULE's tradeoff figure, RULE.md section 7.2).

Orientation, as in RULE's ``img/tradeoff.png`` (x = 1 - Forget Quality, y = Retain Quality): each run (method,
strength, checkpoint) is a point ``(x, y)`` with ``x = 1 - forget score`` (RWKU: 1 - F-All, higher = more
forgotten) and ``y = retain score`` (RWKU: N-All, higher = more kept), both in ``[0, 1]``; **both axes are
higher-is-better**. Scores given x100 (as in the tables) must be divided by 100 first.

Staircase frontier: ``f(x) = max{y_i : x_i >= x}`` for ``x`` in ``[0, 1]`` (the best retain score reachable by a
run that forgets at least as much), ``f(x) = 0`` right of the last point. With the frontier sorted by ``x``
(``x_1 < ... < x_k``, then ``y_1 > ... > y_k``) and ``x_0 = 0``, ``f = y_i`` on ``(x_{i-1}, x_i]``.

Areas (each method's runs are one point set; RULE's = its RS epochs and ReBO checkpoints):

* **dominated area** (:func:`dominated_area`): the area of the part of the unit square that the runs dominate,
  ``{(u, v) : some run has x_i >= u and y_i >= v}`` = ``integral_0^1 f(x) dx``. 1 = a run that forgets
  everything and keeps everything; larger = a better frontier.
* **area beyond before** (:func:`area_beyond`): ``dominated_area(runs + [before]) - dominated_area([before])``,
  what the method adds to the model before unlearning (0 when every run is dominated by it).
* **area above a retain threshold** ``t`` (:func:`pareto_area`), two readings of the paper's "area above each
  retain threshold" (its generator is not released):

  * ``mode="restricted"`` (default): ``integral_0^1 f(x) * [f(x) >= t] dx = sum_i y_i (x_i - x_{i-1}) [y_i >= t]``,
    the area under the staircase over the x-range where the frontier stays at or above ``t``. It reproduces
    the *pattern* of the paper's table (RULE 0.269 and NPO 0.059 constant for t = 0.4 ... 0.7; GA 0.068 -> 0);
    ``t = 0`` gives the dominated area;
  * ``mode="excess"``: ``integral_0^1 max(0, f(x) - t) dx = sum_i max(0, y_i - t) (x_i - x_{i-1})``, the
    hypervolume dominated by the frontier with reference point ``(0, t)``; it shrinks as ``t`` grows.

:func:`area_report` writes these as the markdown of ``pareto_area.md``; :mod:`verl.eval.pareto_plot` draws them;
:func:`pareto_runs` groups collected models into those series (one per method, one point per checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Optional

Point = tuple[float, float]
AREA_MODES = ("restricted", "excess")


def _check_points(points: Iterable[Sequence[float]], where: str, unit: bool) -> list[Point]:
    checked = []
    for i, point in enumerate(points):
        if len(point) < 2:
            raise ValueError(f"{where}: point {i} needs (x, y), got {point!r}")
        x, y = float(point[0]), float(point[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"{where}: point {i} is not finite: {point!r}")
        if unit and not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(
                f"{where}: point {i} = {point!r} is outside [0, 1]^2 (scores x100 must be divided by 100)"
            )
        checked.append((x, y))
    return checked


def pareto_frontier(points: Iterable[Sequence[float]]) -> list[Point]:
    """The non-dominated points (both coordinates higher-is-better), sorted by ``x`` ascending.

    ``q`` dominates ``p`` when ``q.x >= p.x`` and ``q.y >= p.y`` with one strict; duplicates are kept once.
    Along the result ``x`` strictly increases and ``y`` strictly decreases. Empty input -> ``[]``.
    """
    frontier: list[Point] = []
    # Scan from the largest x (ties: largest y first); a point survives iff its y beats every point to its right.
    for x, y in sorted(_check_points(points, "pareto_frontier", unit=False), key=lambda p: (-p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    return frontier[::-1]


def pareto_area(points: Iterable[Sequence[float]], retain_threshold: float, mode: str = "restricted") -> float:
    """Area under the staircase frontier above ``retain_threshold`` (module docstring gives both ``mode`` formulas).

    ``points``: ``(x, y) = (1 - forget, retain)`` in ``[0, 1]``. Empty input -> 0.0.
    """
    if mode not in AREA_MODES:
        raise ValueError(f"pareto_area: unknown mode {mode!r}; choose one of: {', '.join(AREA_MODES)}")
    threshold = float(retain_threshold)
    frontier = pareto_frontier(_check_points(points, "pareto_area", unit=True))
    area, left = 0.0, 0.0
    for x, y in frontier:
        width = x - left
        if mode == "restricted":
            area += y * width if y >= threshold else 0.0
        else:
            area += max(0.0, y - threshold) * width
        left = x
    return area


def area_table(
    methods: Mapping[str, Sequence[Sequence]],
    thresholds: Sequence[float] = (0.4, 0.5, 0.6, 0.7),
    mode: str = "restricted",
) -> dict[str, dict[float, float]]:
    """``{method: {threshold: area}}`` for runs given as ``(forget, retain[, label])`` (forget converted to ``1 - forget``)."""
    table = {}
    for method, runs in methods.items():
        points = as_points(runs)
        table[method] = {float(t): pareto_area(points, t, mode) for t in thresholds}
    return table


def format_area_table(table: Mapping[str, Mapping[float, float]]) -> str:
    """Markdown table like RULE.md 7.2: one row per threshold, one column per method."""
    methods = list(table)
    thresholds = sorted({t for row in table.values() for t in row})
    lines = ["| Retain >= | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for t in thresholds:
        lines.append(f"| {t:g} | " + " | ".join(f"{table[m].get(t, float('nan')):.3f}" for m in methods) + " |")
    return "\n".join(lines)


def dominated_area(points: Iterable[Sequence[float]]) -> float:
    """Area of the unit square dominated by ``points`` (``(x, y)`` in ``[0, 1]``): ``integral_0^1 f(x) dx``."""
    return pareto_area(points, 0.0)


def area_beyond(points: Iterable[Sequence[float]], reference: Sequence[float]) -> float:
    """What ``points`` dominate beyond the ``reference`` point (the model before unlearning), >= 0."""
    ref = _check_points([reference], "area_beyond reference", unit=True)
    return max(0.0, dominated_area([*_check_points(points, "area_beyond", unit=True), *ref]) - dominated_area(ref))


def as_points(runs: Sequence[Sequence]) -> list[Point]:
    return [(1.0 - float(run[0]), float(run[1])) for run in runs]


def area_report(
    methods: Mapping[str, Sequence[Sequence]],
    reference: Optional[Sequence[float]] = None,
    thresholds: Sequence[float] = (0.4, 0.5, 0.6, 0.7),
    mode: str = "restricted",
    axes: tuple[str, str] = ("F-All", "N-All"),
) -> str:
    """Markdown comparing the methods' areas. ``methods``: ``{name: [(forget, retain[, label]), ...]}`` scores in
    ``[0, 1]``; ``reference``: ``(forget, retain)`` of the model before unlearning; ``axes``: the score names."""
    forget, retain = axes
    lines = [
        f"Each run is a point (x, y) = (1 - {forget}, {retain}) in the unit square, both higher = better "
        "(x: forgets more, y: keeps more). A method's points are all its runs (a baseline's strengths; RULE's RS "
        "epochs and ReBO checkpoints).",
        "",
        "- **area**: the area of the unit square the method's points dominate, i.e. of all (u, v) with some point "
        "x >= u and y >= v (the area under its staircase frontier; 1 = forgets everything, keeps everything).",
    ]
    if reference is not None:
        ref = (1.0 - float(reference[0]), float(reference[1]))
        lines.append(
            f"- **beyond before**: area(points + before) - area(before), what the method adds to the model before "
            f"unlearning at (x, y) = ({ref[0]:.3f}, {ref[1]:.3f}); 0 = every point is dominated by it."
        )
    lines += [
        "- **best x at y >= t**: the most forgetting (1 - forget) among points keeping at least t.",
        "",
        "| method | points | area | "
        + ("beyond before | " if reference is not None else "")
        + " | ".join(f"best x at y >= {t:g}" for t in thresholds)
        + " |",
        "|---|---|---|" + ("---|" if reference is not None else "") + "---|" * len(thresholds),
    ]
    for name, runs in methods.items():
        points = as_points(runs)
        cells = [str(len(points)), f"{dominated_area(points):.3f}"]
        if reference is not None:
            cells.append(f"{area_beyond(points, ref):.3f}")
        for t in thresholds:
            kept = [x for x, y in points if y >= t]
            cells.append(f"{max(kept):.3f}" if kept else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Area above each retain threshold (the paper's table, RULE.md 7.2; mode {mode}):", ""]
    lines.append(format_area_table(area_table(methods, thresholds, mode)))
    return "\n".join(lines) + "\n"


def pareto_runs(
    models: Sequence, forget_key: str, retain_key: str
) -> tuple[dict[str, list[tuple[float, float, str]]], list[str]]:
    """``({method: [(forget, retain, checkpoint label), ...]}, warnings)``; models lacking a key are skipped."""
    methods: dict[str, list[tuple[float, float, str]]] = {}
    warnings = []
    for model in models:
        if forget_key not in model.metrics or retain_key not in model.metrics:
            warnings.append(f"warning: {model.name!r} has no {forget_key} / {retain_key}; left out of the Pareto plot")
            continue
        method = model.method
        label = model.name[len(method) :].lstrip("/_-") if model.name.startswith(method) else model.name
        methods.setdefault(method, []).append((model.metrics[forget_key], model.metrics[retain_key], label))
    return methods, warnings
