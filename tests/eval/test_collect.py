"""Collecting result JSONs: averages checked against hand computations, table columns, plot, area, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from verl.eval.collect import load_models, main, method_of

TABLE1 = ["F-FB", "F-QA", "F-AA", "F-All", "N-FB", "N-QA", "N-All", "FM", "RM", "Gen", "Rea", "Tru", "Fac", "Flu"]


def rwku_result(model, index, name, **metrics):
    return {
        "model": model,
        "benchmark": "rwku",
        "target": {"index": index, "name": name, "dirname": f"{index}_{name}"},
        "options": {},
        "metrics": metrics,
        "suites": {},
    }


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


@pytest.fixture()
def results(tmp_path):
    """base: targets 1_A and 2_B; rs_epoch2: only 1_A (in a second folder); both also have a MUSE result."""
    base, rs = tmp_path / "eval_base", tmp_path / "eval_rs"
    write(base / "base" / "1_A.json", rwku_result(
        "base", 1, "A", forget_fb=0.5, forget_all_pooled=0.7, neighbor_all_pooled=0.8, mia_fm_nll=2.0,
        naturalness_refusal_rate_forget=0.0, naturalness_named_refusal_share=None,
        naturalness_false_refusal_rate_neighbor=0.0, mmlu_acc=0.6))  # fmt: skip
    write(base / "base" / "2_B.json", rwku_result(
        "base", 2, "B", forget_fb=0.7, forget_all_pooled=0.9, neighbor_all_pooled=1.0, mia_fm_nll=2.5,
        naturalness_refusal_rate_forget=0.1, naturalness_named_refusal_share=1.0,
        naturalness_false_refusal_rate_neighbor=0.2, mmlu_acc=float("nan")))  # fmt: skip
    write(rs / "rs_epoch2" / "1_A.json", rwku_result(
        "rs_epoch2", 1, "A", forget_fb=0.1, forget_all_pooled=0.3, neighbor_all_pooled=0.6,
        naturalness_refusal_rate_forget=0.75, naturalness_named_refusal_share=0.5,
        naturalness_false_refusal_rate_neighbor=0.25))  # fmt: skip
    for folder, model, knowmem_f in ((base, "base", 0.5), (rs, "rs_epoch2", 0.1)):
        write(folder / model / "muse_books.json", {
            "model": model, "benchmark": "muse", "target": None, "options": {"muse_corpus": "books"},
            "metrics": {"muse_verbmem_f": 0.9, "muse_knowmem_f": knowmem_f, "muse_privleak": -50.0,
                        "muse_knowmem_r": 0.4}})  # fmt: skip
    write(base / "base" / "summary.md", "| not json |")  # beside the JSONs, as python -m verl.eval leaves it
    return base, rs


def read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    rows = list(csv.reader(path.open()))
    return rows[0], {row[0]: dict(zip(rows[0], row)) for row in rows[1:]}


def test_tables_average_over_each_models_targets(results, tmp_path, capsys):
    base, rs = results
    out = tmp_path / "tables"
    assert main([str(base), str(rs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "'rs_epoch2' has 1 of 2 targets" in captured.err and "missing: 2_B" in captured.err
    assert "'base' has" not in captured.err

    header, rows = read_csv(out / "rwku_table1.csv")
    assert header == ["Method", *TABLE1, "F-All(macro)", "N-All(macro)", "targets"]
    assert list(rows) == ["base", "rs_epoch2"]  # folder order
    assert float(rows["base"]["F-FB"]) == pytest.approx(100 * (0.5 + 0.7) / 2)
    assert float(rows["base"]["FM"]) == pytest.approx(100 * (2.0 + 2.5) / 2)
    assert float(rows["base"]["Gen"]) == pytest.approx(60.0)  # the NaN target is left out of the mean
    assert rows["base"]["Rea"] == "" and rows["base"]["targets"] == "2"
    assert float(rows["rs_epoch2"]["F-All"]) == pytest.approx(30.0) and rows["rs_epoch2"]["targets"] == "1"
    assert "| base | 60.0 |" in (out / "rwku_table1.md").read_text()

    header, rows = read_csv(out / "rule_naturalness.csv")
    # always-shown columns, then only the optional ones some model has (Gen here; no boundary, no Rea)
    assert header == ["Method", "F-All", "Refusal-F", "Named", "FalseRef-N", "N-All", "Gen", "targets", "Detector"]
    assert rows["base"]["Detector"] == "strict"  # the refusal figures' detector, collect's default
    assert float(rows["base"]["Refusal-F"]) == pytest.approx(5.0)
    assert float(rows["base"]["Named"]) == pytest.approx(100.0)  # the None (no refusal) target is left out
    assert float(rows["base"]["FalseRef-N"]) == pytest.approx(10.0)
    assert float(rows["rs_epoch2"]["Named"]) == pytest.approx(50.0) and rows["rs_epoch2"]["Gen"] == ""

    header, rows = read_csv(out / "muse_table.csv")
    assert header == ["Method", "VerbMem-f", "KnowMem-f", "PrivLeak", "KnowMem-r", "targets"]
    assert float(rows["rs_epoch2"]["KnowMem-f"]) == pytest.approx(10.0) and float(rows["base"]["PrivLeak"]) == -50.0

    for png in ("pareto.png", "muse_pareto.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    area = (out / "pareto_area.md").read_text()
    # one point per method: base (1 - 0.8, 0.9), rs (1 - 0.3, 0.6): restricted area = y * x when y >= t
    assert "| 0.4 | 0.180 | 0.420 |" in area and "| 0.7 | 0.180 | 0.000 |" in area
    assert "| rs | rs_epoch2 | 30.0 | 60.0 |" in area
    collected = json.loads((out / "collected.json").read_text())
    assert collected["rwku"][1]["method"] == "rs" and collected["rwku"][0]["targets"] == ["1_A", "2_B"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_labels_group_checkpoints_into_one_pareto_series(tmp_path):
    for epoch, (forget, neighbour) in enumerate([(0.6, 0.9), (0.2, 0.5), (0.3, 0.4)], start=1):
        write(tmp_path / f"ck{epoch}" / "1_A.json",
              rwku_result("same-name", 1, "A", forget_all_pooled=forget, neighbor_all_pooled=neighbour))  # fmt: skip
    out = tmp_path / "out"
    labels = [f"--label=rs/epoch{e}={tmp_path / f'ck{e}'}" for e in (1, 2, 3)]
    assert main([*labels, "--out", str(out), "--benchmark", "rwku", "--thresholds", "0.4,0.6"]) == 0
    # points (0.4, 0.9), (0.8, 0.5), (0.7, 0.4): frontier (0.4, 0.9), (0.8, 0.5); (0.7, 0.4) is dominated
    by_hand_04 = 0.9 * 0.4 + 0.5 * (0.8 - 0.4)
    by_hand_06 = 0.9 * 0.4
    assert f"| 0.4 | {by_hand_04:.3f} |" in (out / "pareto_area.md").read_text()
    assert f"| 0.6 | {by_hand_06:.3f} |" in (out / "pareto_area.md").read_text()
    assert not (out / "muse_table.csv").exists()


def test_the_reference_model_is_the_plots_star_not_a_method(tmp_path):
    for name, forget, neighbour in [("before", 0.8, 0.95), ("ga/lr1", 0.6, 0.9), ("ga/lr2", 0.3, 0.5)]:
        write(tmp_path / "eval" / name.replace("/", "_") / "1_A.json",
              rwku_result(name, 1, "A", forget_all_pooled=forget, neighbor_all_pooled=neighbour))  # fmt: skip
    out = tmp_path / "out"
    assert main([str(tmp_path / "eval"), "--out", str(out), "--reference", "before", "--thresholds", "0.6"]) == 0
    area = (out / "pareto_area.md").read_text()
    assert "| Retain >= | ga |" in area and "| before | 1 |" not in area  # before is no method row
    # ga: (0.4, 0.9), (0.7, 0.5): 0.36 + 0.15 = 0.51; with before (0.2, 0.95): 0.19 + 0.9 * 0.2 + 0.15 = 0.52
    assert "| ga | 2 | 0.510 | 0.330 | 0.400 |" in area
    assert "| (reference) | before | 80.0 | 95.0 |" in area and "(x, y) = (0.200, 0.950)" in area
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_common_targets_and_label_precedence(results, tmp_path):
    base, rs = results
    grouped = load_models([tmp_path], {"rs/2": rs}, benchmark="rwku", common_targets=True)
    models = {m.name: m for m in grouped["rwku"]}
    assert set(models) == {"base", "rs/2"}  # files under the labelled folder take the label, not their model field
    assert models["base"].metrics["forget_fb"] == pytest.approx(0.5) and models["base"].metrics["n_targets"] == 1


def test_method_of():
    assert method_of("rs_epoch2") == "rs" and method_of("rebo_step20") == "rebo" and method_of("rs-epoch-2") == "rs"
    assert (
        method_of("rs/epoch2") == "rs"
        and method_of("npo") == "npo"
        and method_of("global_step_20") == "global_step_20"
    )
    assert method_of("a/b/checkpoint-38") == "a/b"


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "missing", "result folder not found"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no result JSON"),
        (lambda d: write(d / "r" / "x.json", {"model": "m", "benchmark": "rwku"}).parent, "missing 'metrics'"),
        (lambda d: write(d / "r" / "x.json", "{broken").parent, "not a readable JSON"),
        (
            lambda d: write(d / "r" / "x.json", {"benchmark": "rwku", "target": None, "metrics": {}}).parent,
            "no 'model'",
        ),
        (
            lambda d: write(d / "r" / "x.json", {"model": "m", "benchmark": "tofu", "metrics": {}}).parent,
            "'benchmark'",
        ),
    ],
)
def test_errors_are_one_line_naming_the_file(tmp_path, capsys, make, expected):
    folder = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(folder) in err[0]
    assert not (tmp_path / "out").exists()


def test_duplicate_model_target_is_an_error(tmp_path, capsys):
    first = write(tmp_path / "a" / "1_A.json", rwku_result("m", 1, "A", forget_fb=0.1))
    second = write(tmp_path / "b" / "1_A.json", rwku_result("m", 1, "A", forget_fb=0.2))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "two results for model 'm', target '1_A'" in err and str(first) in err and str(second) in err


def probe_records(group: str, predictions: list[str], level: str = "qa") -> dict:
    return {
        "records": [{"group": group, "level": level, "index": i, "prediction": p} for i, p in enumerate(predictions)]
    }


def test_answer_retention_against_a_reference():
    from verl.eval.naturalness import answer_retention

    refuse = "I'm not sure about Ann Lee."
    before = {"suites": {
        "forget": probe_records("forget", ["Paris", "NOANSWER", "blue", refuse]),
        "neighbor": probe_records("neighbor", ["1990", "NOANSWER", "cats", "Rome", refuse]),
    }}  # fmt: skip
    after = {"suites": {
        "forget": probe_records("forget", [refuse, refuse, "green", refuse]),
        "neighbor": probe_records("neighbor", ["1991", "x", "NOANSWER", refuse, "y"]),
    }}  # fmt: skip
    metrics = answer_retention(before, after)
    # neighbour: answered before = 0, 2, 3; still answered after: 0 only (2 went silent, 3 refused)
    assert metrics["naturalness_kept_answers_neighbor"] == pytest.approx(1 / 3)
    # forget: answered before = 0, 2; refused after: 0 only
    assert metrics["naturalness_new_refusal_rate_forget"] == pytest.approx(1 / 2)
    assert "naturalness_kept_answers_boundary" not in metrics


def test_reference_option_adds_kept_columns(tmp_path, capsys):
    refuse = "I don't know about A."
    for model, neighbour in (("base", ["x", "y", "z", "w"]), ("rs", ["x", refuse, refuse, "NOANSWER"])):
        result = rwku_result(model, 1, "A", forget_all_pooled=0.5, neighbor_all_pooled=0.5)
        result["suites"] = {"neighbor": probe_records("neighbor", neighbour), "forget": probe_records("forget", ["q"])}
        write(tmp_path / "res" / model / "1_A.json", result)
    assert main([str(tmp_path / "res"), "--out", str(tmp_path / "out"), "--reference", "base"]) == 0
    header, rows = read_csv(tmp_path / "out" / "rule_naturalness.csv")
    assert "Kept-N" in header and "NewRef-F" in header
    assert float(rows["base"]["Kept-N"]) == pytest.approx(100.0)
    assert float(rows["rs"]["Kept-N"]) == pytest.approx(25.0)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "res"), "--out", str(tmp_path / "o2"), "--reference", "nobody"])
    assert exit_info.value.code == 2
    assert "--reference 'nobody' is not among the models: base, rs" in capsys.readouterr().err


def test_tables_inside_a_result_folder_are_not_read_back(results, tmp_path):
    base, _ = results
    out = base / "tables"  # as `python -m verl.eval.collect log/eval --out log/eval/tables`
    for _ in range(2):  # the second run finds the first run's collected.json under the folder it scans
        assert main([str(base), "--out", str(out)]) == 0
    _, rows = read_csv(out / "rwku_table1.csv")
    assert list(rows) == ["base"] and rows["base"]["targets"] == "2"
