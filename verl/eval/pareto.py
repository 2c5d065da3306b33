"""Forget-retain Pareto frontier and its area (RULE's tradeoff figure, RULE.md section 7.2).

Orientation, as in RULE's ``img/tradeoff.png``: each run (method, hyper-parameter, checkpoint) is a point
``(x, y)`` with ``x = 1 - forget score`` (Forget Quality: higher = more forgotten) and ``y = retain score``
(Retain Quality: higher = more kept), both in ``[0, 1]``; **both axes are higher-is-better**. Scores given
x100 (as in the tables) must be divided by 100 first.

Staircase frontier: ``f(x) = max{y_i : x_i >= x}`` for ``x`` in ``[0, 1]`` (the best retain score reachable by a
run that forgets at least as much), ``f(x) = 0`` right of the last point. With the frontier sorted by ``x``
(``x_1 < ... < x_k``, then ``y_1 > ... > y_k``) and ``x_0 = 0``, ``f = y_i`` on ``(x_{i-1}, x_i]``.

Area above a retain threshold ``t`` (:func:`pareto_area`), two readings of the paper's "area above each
retain threshold" (its generator is not released):

* ``mode="restricted"`` (default): ``integral_0^1 f(x) * [f(x) >= t] dx = sum_i y_i (x_i - x_{i-1}) [y_i >= t]``,
  the area under the staircase over the x-range where the frontier stays at or above ``t``. It reproduces the
  *pattern* of the paper's table (RULE 0.269 and NPO 0.059 constant for t = 0.4 ... 0.7; GA 0.068 -> 0);
* ``mode="excess"``: ``integral_0^1 max(0, f(x) - t) dx = sum_i max(0, y_i - t) (x_i - x_{i-1})``, the
  hypervolume dominated by the frontier with reference point ``(0, t)``; it shrinks as ``t`` grows.

:func:`plot_frontier` draws every method's points and staircase (matplotlib, Agg canvas, no pyplot state),
writes the PNG atomically and returns the area table; :func:`pareto_runs` groups collected models into
those series (one per method, one point per checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Union

from verl.utils.fileio import atomic_path

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
        points = [(1.0 - float(run[0]), float(run[1])) for run in runs]
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


def plot_frontier(
    methods: Mapping[str, Sequence[Sequence]],
    path_png: Union[str, Path],
    thresholds: Sequence[float] = (0.4, 0.5, 0.6, 0.7),
    mode: str = "restricted",
    title: str = "Forget-retain trade-off",
) -> dict[str, dict[float, float]]:
    """Plot each method's runs ``(forget, retain[, label])`` at ``(1 - forget, retain)`` with its staircase
    frontier (one colour per method), dotted lines at the ``thresholds``, the area per threshold in the legend;
    write ``path_png`` atomically and return :func:`area_table`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = area_table(methods, thresholds, mode)
    figure = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colours = [f"C{i % 10}" for i in range(len(methods))]
    for colour, (method, runs) in zip(colours, methods.items()):
        points = [(1.0 - float(run[0]), float(run[1])) for run in runs]
        areas = ", ".join(f"{table[method][float(t)]:.3f}" for t in thresholds)
        axes.scatter([p[0] for p in points], [p[1] for p in points], color=colour, s=18, alpha=0.6)
        for run, (x, y) in zip(runs, points):
            if len(run) > 2 and run[2]:
                axes.annotate(str(run[2]), (x, y), fontsize=6, color=colour, xytext=(2, 2), textcoords="offset points")
        frontier = pareto_frontier(points)
        xs, ys, left = [], [], 0.0
        for x, y in frontier:
            xs += [left, x]
            ys += [y, y]
            left = x
        axes.plot(xs, ys, color=colour, linewidth=1.5, label=f"{method} (area {areas})")
    for t in thresholds:
        axes.axhline(float(t), color="grey", linestyle=":", linewidth=0.8)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("1 - Forget Quality (higher = more forgotten)")
    axes.set_ylabel("Retain Quality (higher = more kept)")
    thresholds_text = ", ".join(f"{float(t):g}" for t in thresholds)
    axes.set_title(f"{title}\narea ({mode}) at retain >= {thresholds_text}", fontsize=9)
    if methods:
        axes.legend(fontsize=7, loc="lower left")
    with atomic_path(path_png) as tmp:
        figure.savefig(str(tmp), format="png")
    return table


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
