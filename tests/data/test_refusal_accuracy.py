"""The labelled refusal set (data/refusal_labels.jsonl) and the accuracy script over it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from data.refusal_accuracy import LABELS, accuracy, evaluate, load_labels, main, markdown, scores


def test_the_labelled_set_is_large_mixed_and_well_formed():
    rows = load_labels()
    assert len(rows) >= 300
    labels = Counter(row["label"] for row in rows)
    assert min(labels.values()) >= 100  # both classes well represented
    sources = {row["source"] for row in rows}
    assert {"rule_idk_target", "rule_boundary_gold", "hand_negative", "hand_positive"} <= sources
    assert any(s.startswith("run_") for s in sources)  # real outputs of our runs
    assert {row["split"] for row in rows} == {"dev", "holdout", "fresh"}
    assert all(row["label"] for row in rows if row["source"].endswith("idk_target"))  # refusal templates
    assert not any(row["label"] for row in rows if row["source"].startswith("rule_boundary_gold"))  # gold answers


def test_strict_reaches_095_and_beats_rule_on_the_labelled_set():
    strict = accuracy("strict")
    assert strict >= 0.95
    assert accuracy("strict", split="fresh") >= 0.9  # the split never used to change strict
    assert strict - accuracy("rule") >= 0.15  # the regex's error this set documents (~74 % here)


def test_scores_against_a_hand_count():
    # labels T T F F F, predictions T F T F F: tp 1, fp 1, fn 1, tn 2
    s = scores([True, True, False, False, False], [True, False, True, False, False])
    assert s == {"n": 5, "accuracy": 3 / 5, "precision": 1 / 2, "recall": 1 / 2}
    assert scores([False], [False]) == {"n": 1, "accuracy": 1.0, "precision": None, "recall": None}


def test_evaluate_reports_splits_and_errors():
    rows = [
        {"text": "a", "label": True, "source": "x", "split": "dev"},
        {"text": "b", "label": False, "source": "x", "split": "fresh"},
    ]
    report = evaluate(rows, {"always": lambda text: True})
    assert report["always"]["all"]["accuracy"] == 0.5 and report["always"]["dev"]["accuracy"] == 1.0
    assert "holdout" not in report["always"] and report["always"]["errors"] == [rows[1]]
    table = markdown(report)
    assert table.splitlines()[0] == "| detector | split | n | accuracy | precision | recall |"
    assert "| always | fresh | 1 | 0.000 | 0.000 | - |" in table


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('{"text": "a", "label": "yes", "source": "x", "split": "dev"}', "'label' must be a bool"),
        ('{"text": "a", "label": true, "source": "x", "split": "test"}', "split must be one of dev, holdout, fresh"),
        ('{"text": "a", "label": true, "source": "x", "split": "dev", "target": 3}', "'target' must be a str"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"text": "ok", "label": false, "source": "x", "split": "dev"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message) as error:
        load_labels(path)
    assert f"{path}:2" in str(error.value)


def test_duplicates_and_missing_files(tmp_path):
    path = tmp_path / "labels.jsonl"
    row = json.dumps({"text": "same", "label": True, "source": "x", "split": "dev"})
    path.write_text(f"{row}\n{row}\n")
    with pytest.raises(ValueError, match="the same text as line 1"):
        load_labels(path)
    with pytest.raises(FileNotFoundError, match="labelled refusal set not found"):
        load_labels(tmp_path / "none.jsonl")


def test_cli_prints_the_table(capsys):
    assert main(["--labels", str(LABELS), "--errors"]) == 0
    out = capsys.readouterr().out
    assert "| rule | all | " in out and "| strict | fresh | " in out
    assert "strict: label=" in out  # --errors lists the misses
    with pytest.raises(SystemExit):
        main(["--detectors", "regex"])
