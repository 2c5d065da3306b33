"""Pareto frontier and area: hand-made point sets, a brute-force dominance reference, a fine Riemann sum."""

import random

import pytest

from verl.eval.pareto import area_table, format_area_table, pareto_area, pareto_frontier, plot_frontier


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
