"""Pareto frontier and area: hand-made point sets, a brute-force dominance reference, a fine Riemann sum."""

import random

import pytest

from verl.eval.pareto import (
    area_beyond,
    area_report,
    area_table,
    dominated_area,
    format_area_table,
    pareto_area,
    pareto_frontier,
)
from verl.eval.pareto_plot import draw_frontier, method_colours, place_labels, plot_frontier


def brute_force_frontier(points):
    """O(n^2) reference: keep p unless some q is >= in both coordinates and differs from it."""
    kept = {p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)}
    return sorted(kept)


def riemann_area(points, threshold, mode, steps=20_000):
    """Midpoint sum of the staircase f(x) = max{y_i : x_i >= x} over [0, 1]."""
    total = 0.0
    for k in range(steps):
        x = (k + 0.5) / steps
        ys = [py for px, py in points if px >= x]
        f = max(ys) if ys else 0.0
        total += (f if f >= threshold else 0.0) if mode == "restricted" else max(0.0, f - threshold)
    return total / steps


def test_frontier_removes_dominated_points_and_sorts_by_x():
    points = [(0.2, 0.8), (0.5, 0.6), (0.4, 0.5), (0.7, 0.3), (0.1, 0.7), (0.6, 0.3)]
    # (0.4, 0.5) < (0.5, 0.6); (0.1, 0.7) < (0.2, 0.8); (0.6, 0.3) < (0.7, 0.3)
    assert pareto_frontier(points) == [(0.2, 0.8), (0.5, 0.6), (0.7, 0.3)]


def test_frontier_ties_duplicates_single_and_empty():
    assert pareto_frontier([]) == []
    assert pareto_frontier([(0.3, 0.4)]) == [(0.3, 0.4)]
    assert pareto_frontier([(0.3, 0.4), (0.3, 0.4)]) == [(0.3, 0.4)]
    assert pareto_frontier([(0.3, 0.4), (0.3, 0.6)]) == [(0.3, 0.6)]  # same x: higher y wins
    assert pareto_frontier([(0.2, 0.5), (0.6, 0.5)]) == [(0.6, 0.5)]  # same y: higher x wins
    assert pareto_frontier([[0.1, 0.9, "label ignored"]]) == [(0.1, 0.9)]


def test_frontier_matches_brute_force_on_random_sets():
    rng = random.Random(0)
    for _ in range(200):
        points = [(rng.randint(0, 10) / 10, rng.randint(0, 10) / 10) for _ in range(rng.randint(0, 15))]
        assert pareto_frontier(points) == brute_force_frontier(points)


def test_area_by_hand():
    points = [(0.2, 0.8), (0.5, 0.6), (0.7, 0.3), (0.4, 0.5)]
    # staircase: 0.8 on [0, 0.2], 0.6 on (0.2, 0.5], 0.3 on (0.5, 0.7], 0 after
    assert pareto_area(points, 0.4) == pytest.approx(0.8 * 0.2 + 0.6 * 0.3)
    assert pareto_area(points, 0.7) == pytest.approx(0.8 * 0.2)
    assert pareto_area(points, 0.9) == 0.0
    assert pareto_area(points, 0.0) == pytest.approx(0.8 * 0.2 + 0.6 * 0.3 + 0.3 * 0.2)
    assert pareto_area(points, 0.4, mode="excess") == pytest.approx(0.4 * 0.2 + 0.2 * 0.3)
    assert pareto_area(points, 0.7, mode="excess") == pytest.approx(0.1 * 0.2)
    assert pareto_area([], 0.4) == 0.0
    assert pareto_area([(0.5, 0.6)], 0.6) == pytest.approx(0.3)  # y == threshold counts in restricted mode
    assert pareto_area([(0.5, 0.6)], 0.6, mode="excess") == 0.0


def test_restricted_area_is_flat_across_thresholds_when_the_frontier_stays_above_them():
    """The pattern of RULE's table: a frontier entirely above 0.7 has the same area at 0.4 ... 0.7."""
    points = [(0.3, 0.75), (0.6, 0.72)]
    areas = [pareto_area(points, t) for t in (0.4, 0.5, 0.6, 0.7)]
    assert areas == [pytest.approx(0.3 * 0.75 + 0.3 * 0.72)] * 4
    excess = [pareto_area(points, t, mode="excess") for t in (0.4, 0.5, 0.6, 0.7)]
    assert excess == sorted(excess, reverse=True) and excess[0] > excess[-1]


def test_area_matches_a_riemann_sum_on_random_sets():
    rng = random.Random(1)
    for _ in range(5):
        points = [(rng.random(), rng.random()) for _ in range(rng.randint(1, 8))]
        for mode in ("restricted", "excess"):
            for t in (0.3, 0.6):
                assert pareto_area(points, t, mode) == pytest.approx(riemann_area(points, t, mode), abs=1e-3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="point 1 .* outside"):
        pareto_area([(0.1, 0.2), (30.0, 70.0)], 0.4)
    with pytest.raises(ValueError, match="unknown mode 'area'"):
        pareto_area([(0.1, 0.2)], 0.4, mode="area")
    with pytest.raises(ValueError, match="point 0 is not finite"):
        pareto_frontier([(float("nan"), 0.2)])
    with pytest.raises(ValueError, match="needs"):
        pareto_frontier([(0.1,)])


def test_area_table_converts_forget_scores_and_plot_writes_a_png(tmp_path):
    methods = {
        "GA": [(0.7, 0.45, "lr 1e-6"), (0.9, 0.8, "")],  # forget, retain[, label]
        "RULE": [(0.3, 0.74, "step 10"), (0.25, 0.7)],
        "empty": [],
    }
    table = area_table(methods, thresholds=(0.4, 0.7))
    assert table["GA"][0.4] == pytest.approx(0.1 * 0.8 + 0.2 * 0.45)  # x = 0.1 and 0.3
    assert table["GA"][0.7] == pytest.approx(0.1 * 0.8)
    assert table["RULE"][0.7] == pytest.approx(0.7 * 0.74 + 0.05 * 0.7)
    assert table["empty"] == {0.4: 0.0, 0.7: 0.0}
    path = tmp_path / "fig" / "tradeoff.png"
    assert plot_frontier(methods, path, thresholds=(0.4, 0.7)) == table
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["tradeoff.png"]
    text = format_area_table(table)
    assert text.splitlines()[0] == "| Retain >= | GA | RULE | empty |"
    assert "| 0.7 | 0.080 | 0.553 | 0.000 |" in text


def test_dominated_area_and_area_beyond_before_by_hand():
    points = [(0.2, 0.8), (0.5, 0.6), (0.7, 0.3), (0.4, 0.5)]
    # the union of the boxes [0, x] x [0, y]: 0.8 * 0.2 + 0.6 * 0.3 + 0.3 * 0.2
    assert dominated_area(points) == pytest.approx(0.16 + 0.18 + 0.06)
    # before at (0.1, 0.9) adds 0.9 * 0.1 on the left and covers (0.2, 0.8)'s strip only up to y = 0.8
    before = (0.1, 0.9)
    union = 0.9 * 0.1 + 0.8 * 0.1 + 0.6 * 0.3 + 0.3 * 0.2
    assert area_beyond(points, before) == pytest.approx(union - 0.9 * 0.1)
    assert area_beyond([(0.05, 0.5)], before) == 0.0  # dominated by before: adds nothing
    assert dominated_area([]) == 0.0 and dominated_area([(1.0, 1.0)]) == 1.0


def test_area_report_defines_the_area_and_compares_methods():
    methods = {"RULE": [(0.2, 0.9, "RS 1"), (0.05, 0.85, "ReBO 20")], "GA": [(0.3, 0.5, "lr 1e-4")]}
    text = area_report(methods, reference=(0.8, 0.95), thresholds=(0.6,))
    assert "the area of the unit square the method's points dominate" in text
    # points (x, y) = (0.8, 0.9), (0.95, 0.85); before (0.2, 0.95) alone dominates 0.19
    # RULE: 0.9 * 0.8 + 0.85 * 0.15 = 0.8475; with before: 0.95 * 0.2 + 0.9 * 0.6 + 0.1275 = 0.8575, beyond 0.6675
    assert "| RULE | 2 | 0.848 | 0.668 | 0.950 |" in text
    # GA: (0.7, 0.5): 0.35; with before: 0.19 + 0.5 * 0.5 = 0.44; keeps less than 0.6 everywhere
    assert "| GA | 1 | 0.350 | 0.250 | - |" in text
    assert "| 0.6 | 0.848 | 0.000 |" in text  # the paper-style threshold table follows


def overlaps(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_labels_of_points_at_one_spot_do_not_overlap_each_other_nor_the_markers():
    anchors = [(200.0, 150.0)] * 8 + [(204.0, 152.0), (196.0, 149.0), (320.0, 40.0)]
    sizes = [(70.0, 12.0)] * len(anchors)
    bounds = (0.0, 0.0, 400.0, 300.0)
    markers = [(x - 5, y - 5, x + 5, y + 5) for x, y in anchors]
    boxes = place_labels(anchors, sizes, bounds, avoid=markers)
    assert len(boxes) == len(anchors)
    for i, a in enumerate(boxes):
        assert bounds[0] <= a[0] and a[2] <= bounds[2] and bounds[1] <= a[1] and a[3] <= bounds[3]
        assert not any(overlaps(a, m) for m in markers)
        assert not any(overlaps(a, b) for b in boxes[i + 1 :]), (i, a)
    assert [round(b[2] - b[0]) for b in boxes] == [70] * len(anchors)  # sizes kept
    # a lone label stays next to its point (first ring, upper right)
    (alone,) = place_labels([(50.0, 50.0)], [(30.0, 10.0)], bounds)
    assert alone[0] > 50.0 and alone[1] > 50.0 and alone[0] - 50.0 < 10.0


def test_the_figure_has_one_colour_per_method_the_before_star_and_no_overlapping_labels():
    methods = {
        name: [(0.8 - 0.2 * k, 0.95 - 0.07 * k * (i + 1), f"lr {k}e-5") for k in range(3)]
        for i, name in enumerate(["RULE", "GA", "NPO", "DPO", "RT", "GD"])
    }
    methods["ICU"] = [(0.79, 0.94, "")]  # near before and the first strengths: a crowded corner
    figure = draw_frontier(methods, reference=(0.8, 0.96))
    axes = figure.axes[0]
    colours = method_colours(list(methods))
    assert len(set(colours.values())) == len(methods)
    handles, names = axes.get_legend_handles_labels()
    by_name = {n.split("  (area")[0]: h for h, n in zip(handles, names)}
    assert set(by_name) == {*methods, "before", "Pareto frontier (all runs)"}
    for name in methods:  # each method one line through its points, in its own colour
        assert by_name[name].get_color() == colours[name] and len(by_name[name].get_xdata()) == len(methods[name])
    assert by_name["before"].get_marker() == "*" and list(by_name["before"].get_xdata()) == [pytest.approx(0.2)]
    assert by_name["Pareto frontier (all runs)"].get_linestyle() == "--"
    renderer = figure.canvas.get_renderer()
    texts = [t for t in axes.texts if t.get_text()]
    assert len(texts) == 6 * 3 + 1  # every labelled run and "before"
    boxes = [t.get_window_extent(renderer=renderer) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not overlaps((a.x0, a.y0, a.x1, a.y1), (b.x0 + 0.5, b.y0 + 0.5, b.x1 - 0.5, b.y1 - 0.5))


def test_many_methods_still_get_distinct_colours():
    names = [f"m{i}" for i in range(14)]
    assert len(set(method_colours(names).values())) == 14


def test_axes_zoom_to_runs_that_sit_in_one_corner_and_keep_the_unit_range_otherwise():
    # SmolLM2 on real RWKU: F-All 0.4-5.3, N-All 9.5-15.1 -> every point in one corner of the unit square
    corner = {"RULE": [(0.004, 0.128, "RS 1"), (0.010, 0.132, "ReBO")], "GA": [(0.053, 0.137), (0.024, 0.108)]}
    axes = draw_frontier(corner, reference=(0.053, 0.151)).axes[0]
    (x0, x1), (y0, y1) = axes.get_xlim(), axes.get_ylim()
    assert x0 < 1 - 0.053 and x1 > 1 - 0.004 and x1 - x0 < 0.2  # 1 - F-All: 0.947 .. 0.996, with a margin
    assert y0 < 0.108 and y1 > 0.151 and y1 - y0 < 0.2
    wide = {"RULE": [(0.03, 0.89)], "NPO": [(0.78, 0.97)]}
    axes = draw_frontier(wide, reference=(0.82, 0.98)).axes[0]
    assert axes.get_xlim() == pytest.approx((-0.02, 1.02))  # 1 - F-All spreads over 0.18 .. 0.97
    assert axes.get_ylim()[1] - axes.get_ylim()[0] < 0.5  # N-All 0.89 .. 0.98 alone is zoomed
