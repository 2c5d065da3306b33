"""The forget-retain plot (``pareto.png``): one colour per method, its runs joined, the frontier, readable labels.

:func:`draw_frontier` puts every run at ``(1 - forget, retain)`` (:mod:`verl.eval.pareto`'s orientation, the
paper's axes: x = 1 - Forget Quality, y = Retain Quality), one colour and marker per method with its runs
joined in the order given (a baseline's strengths in sweep order; RULE's RS epochs then ReBO checkpoints), the
Pareto frontier over every run and the reference (dashed staircase), and the model before unlearning as a
black star ("before"), not as a method. Labels are placed by :func:`place_labels` so that no two overlap and
none covers a marker. The legend sits outside the axes and gives each method's dominated area.
:func:`plot_frontier` writes the PNG atomically. matplotlib's Agg canvas only (no pyplot state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import cos, radians, sin
from pathlib import Path
from typing import Any, Optional, Union

from verl.eval.pareto import area_table, as_points, dominated_area, pareto_frontier
from verl.utils.fileio import atomic_path

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (pixels)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
# first-ring directions in degrees, most preferred first (upper right, then around)
DIRECTIONS = (45, 0, 90, 315, 135, 270, 180, 225, 22.5, 67.5, 337.5, 292.5, 112.5, 157.5, 202.5, 247.5)


def method_colours(names: Sequence[str]) -> dict[str, str]:
    """One distinct colour per method: tab10, then evenly spaced hues beyond ten methods."""
    if len(names) <= len(TAB10):
        return {name: TAB10[i] for i, name in enumerate(names)}
    import colorsys

    hues = [colorsys.hsv_to_rgb(i / len(names), 0.75, 0.85) for i in range(len(names))]
    return {name: "#" + "".join(f"{round(255 * c):02x}" for c in rgb) for name, rgb in zip(names, hues)}


def _overlap(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0.0


def place_labels(
    anchors: Sequence[tuple[float, float]],
    sizes: Sequence[tuple[float, float]],
    bounds: Box,
    avoid: Sequence[Box] = (),
    gap: float = 4.0,
    rings: int = 40,
) -> list[Box]:
    """Boxes for labels of ``sizes`` ``(w, h)`` near their ``anchors`` ``(x, y)`` (pixels), greedily in order.

    Candidates lie on rings around the anchor (distance ``gap``, ``gap + h``, ...; 16 directions each, upper
    right first); a label takes the first candidate inside ``bounds`` that overlaps no label placed before it and
    no ``avoid`` box (e.g. the markers). When none does (a crowded plot), the candidate with the least overlap.
    """
    placed: list[Box] = []
    for (ax, ay), (w, h) in zip(anchors, sizes):
        best, best_cost = None, None
        for ring in range(rings):
            distance = gap + ring * max(h, 4.0) * 0.75
            for degrees in DIRECTIONS:
                dx, dy = cos(radians(degrees)), sin(radians(degrees))
                # the box's side (or corner) facing the point sits ``distance`` away from it
                cx = ax + dx * distance + w / 2 * max(-1.0, min(1.0, 2 * dx))
                cy = ay + dy * distance + h / 2 * max(-1.0, min(1.0, 2 * dy))
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                outside = max(0.0, bounds[0] - box[0]) + max(0.0, box[2] - bounds[2])
                outside += max(0.0, bounds[1] - box[1]) + max(0.0, box[3] - bounds[3])
                cost = sum(_overlap(box, other) for other in (*placed, *avoid)) + outside * (w + h) * 10
                if cost == 0.0:
                    best, best_cost = box, 0.0
                    break
                if best_cost is None or cost < best_cost:
                    best, best_cost = box, cost
            if best_cost == 0.0:
                break
        placed.append(best)
    return placed


def axis_limits(values: Sequence[float], full: float = 0.5) -> tuple[float, float]:
    """Axis range for scores in ``[0, 1]``: the whole unit range when ``values`` spread over at least ``full`` of
    it, else their own range with a margin (a small model's runs all sit in one corner and would be a blur)."""
    lo, hi = min(values), max(values)
    if hi - lo >= full:
        return -0.02, 1.02
    pad = max(0.1 * (hi - lo), 0.01)
    return max(-0.02, lo - pad), min(1.02, hi + pad)


def draw_frontier(
    methods: Mapping[str, Sequence[Sequence]],
    reference: Optional[Sequence[float]] = None,
    axis_names: tuple[str, str] = ("F-All", "N-All"),
    title: str = "Forget-retain trade-off",
) -> Any:
    """A matplotlib ``Figure`` of ``methods`` = ``{name: [(forget, retain[, label]), ...]}`` (scores in ``[0, 1]``)
    with ``reference`` = ``(forget, retain)`` of the model before unlearning; ``axis_names`` = the scores' names."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 6.0), dpi=120)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0.08, 0.09, 0.6, 0.82))  # fixed, so the pixel positions below stay true
    axes.set_xlabel(f"1 - Forget Quality  (1 - {axis_names[0]}: more forgotten \u2192)")
    axes.set_ylabel(f"Retain Quality  ({axis_names[1]}: more kept \u2192)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, linewidth=0.4, alpha=0.4)
    colours = method_colours(list(methods))
    every: list[tuple[float, float]] = []
    labels: list[tuple[float, float, str, str]] = []  # x, y, text, colour
    for i, (name, runs) in enumerate(methods.items()):
        points = as_points(runs)
        every += points
        legend = f"{name}  (area {dominated_area(points):.3f})"
        style = dict(color=colours[name], marker=MARKERS[i % len(MARKERS)], markersize=6, linewidth=1.4)
        axes.plot([p[0] for p in points], [p[1] for p in points], label=legend, **style)
        labels += [(x, y, str(run[2]), colours[name]) for run, (x, y) in zip(runs, points) if len(run) > 2 and run[2]]
    if reference is not None:
        ref = (1.0 - float(reference[0]), float(reference[1]))
        every.append(ref)
        axes.plot([ref[0]], [ref[1]], marker="*", markersize=14, color="black", linestyle="none", label="before")
        labels.insert(0, (ref[0], ref[1], "before", "black"))
    frontier = pareto_frontier(every)
    if frontier:
        xs, ys = [0.0], [frontier[0][1]]
        for (x, y), nxt in zip(frontier, [*frontier[1:], None]):
            xs += [x, x]
            ys += [y, nxt[1] if nxt else 0.0]
        axes.plot(xs, ys, color="black", linestyle="--", linewidth=0.9, alpha=0.7, label="Pareto frontier (all runs)")
    axes.set_xlim(*axis_limits([x for x, _ in every] or [0.0, 1.0]))
    axes.set_ylim(*axis_limits([y for _, y in every] or [0.0, 1.0]))
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    _annotate(axes, canvas, labels)
    return figure


def _annotate(axes, canvas, labels: list[tuple[float, float, str, str]]) -> None:
    """Draw ``labels`` at :func:`place_labels` positions, each tied to its point by a thin line when moved away."""
    renderer = canvas.get_renderer()
    to_pixels, to_data = axes.transData, axes.transData.inverted()
    texts, sizes, anchors = [], [], []
    for x, y, text, colour in labels:
        artist = axes.text(x, y, text, fontsize=7, color=colour, ha="left", va="bottom")
        extent = artist.get_window_extent(renderer=renderer)
        texts.append(artist)
        sizes.append((extent.width + 2.0, extent.height + 1.0))
        anchors.append(tuple(to_pixels.transform((x, y))))
    frame = axes.get_window_extent(renderer=renderer)
    markers = [(px - 5.0, py - 5.0, px + 5.0, py + 5.0) for px, py in anchors]
    boxes = place_labels(anchors, sizes, (frame.x0, frame.y0, frame.x1, frame.y1), avoid=markers)
    for artist, box, (px, py), (_, _, _, colour) in zip(texts, boxes, anchors, labels):
        artist.set_position(tuple(to_data.transform((box[0] + 1.0, box[1] + 0.5))))
        nearest = (min(max(px, box[0]), box[2]), min(max(py, box[1]), box[3]))
        if abs(nearest[0] - px) + abs(nearest[1] - py) > 12.0:
            line = to_data.transform([(px, py), nearest])
            axes.plot(line[:, 0], line[:, 1], color=colour, linewidth=0.5, alpha=0.6)


def plot_frontier(
    methods: Mapping[str, Sequence[Sequence]],
    path_png: Union[str, Path],
    thresholds: Sequence[float] = (0.4, 0.5, 0.6, 0.7),
    mode: str = "restricted",
    title: str = "Forget-retain trade-off",
    reference: Optional[Sequence[float]] = None,
    axis_names: tuple[str, str] = ("F-All", "N-All"),
) -> dict[str, dict[float, float]]:
    """:func:`draw_frontier` written to ``path_png`` atomically; returns :func:`~verl.eval.pareto.area_table`."""
    table = area_table(methods, thresholds, mode)
    figure = draw_frontier(methods, reference, axis_names, title)
    with atomic_path(path_png) as tmp:
        figure.savefig(str(tmp), format="png")
    return table
