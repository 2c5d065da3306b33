"""Report files (atomic JSON, Table-1 layout) and the standalone command end to end on a tiny saved model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl.eval.__main__ import main
from verl.eval.report import summary_table, to_markdown, write_json_atomic

REPO = Path(__file__).resolve().parents[2]


def test_summary_table_scales_and_means():
    results = [
        {"benchmark": "rwku", "target": {"index": 1, "name": "A", "dirname": "1_A"},
         "metrics": {"forget_fb": 0.5, "forget_all_pooled": 0.25, "mia_fm_nll": 2.267, "fluency_entropy": 7.058}},
        {"benchmark": "rwku", "target": {"index": 2, "name": "B", "dirname": "2_B"},
         "metrics": {"forget_fb": 0.7, "forget_all_pooled": float("nan")}},
    ]  # fmt: skip
    header, rows = summary_table(results)
    assert header[:5] == ["target", "F-FB", "F-QA", "F-AA", "F-All"] and header[14] == "Flu"
    assert (
        rows[0][1] == pytest.approx(50.0)
        and rows[0][8] == pytest.approx(226.7)
        and rows[0][14] == pytest.approx(705.8)
    )
    assert rows[1][4] is None
    assert rows[2][0] == "mean" and rows[2][1] == pytest.approx(60.0) and rows[2][4] == pytest.approx(25.0)
    assert "| 1 A | 50.0 |" in to_markdown(header, rows)
    muse_header, muse_rows = summary_table(
        [{"benchmark": "muse", "target": None, "metrics": {"muse_privleak": -57.3}}]
    )
    assert muse_header == ["target", "VerbMem-f", "KnowMem-f", "PrivLeak", "KnowMem-r"] and muse_rows[0][3] == -57.3


def test_write_json_atomic_replaces_and_cleans(tmp_path):
    path = write_json_atomic(tmp_path / "a" / "r.json", {"x": float("nan"), "y": [1.5]})
    assert json.loads(path.read_text()) == {"x": None, "y": [1.5]}
    write_json_atomic(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


@pytest.fixture(scope="module")
def saved_tiny_model(tmp_path_factory, tiny_tokenizer, tiny_model):
    folder = tmp_path_factory.mktemp("tiny") / "tiny-qwen2"
    tiny_model.save_pretrained(str(folder))
    tiny_tokenizer.save_pretrained(str(folder))
    return folder


def test_cli_end_to_end(shared_data, saved_tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--model", str(saved_tiny_model), "--benchmark", "rwku", "--targets", "1", "--data-dir", str(shared_data / "rwku"),
            "--suite", "forget,neighbor,mia,utility", "--out", str(out), "--max-probes", "2", "--batch-size", "4", "--no-progress",
            "--max-new-tokens-cap", "6"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "tiny-qwen2" / "1_Stephen_King.json").read_text())
    assert result["model"] == str(saved_tiny_model) and result["target"]["name"] == "Stephen King"
    assert result["refusal_detector"] == result["options"]["refusal_detector"] == "strict"  # the CLI's default
    assert result["suites_run"] == ["forget", "neighbor", "mia", "mmlu", "bbh", "truthfulqa", "triviaqa", "fluency"]
    for key in (
        "forget_all",
        "neighbor_all",
        "mia_fm_nll",
        "mmlu_acc",
        "bbh_em",
        "truthfulqa_mc1",
        "triviaqa_f1",
        "fluency_entropy",
    ):
        assert isinstance(result["metrics"][key], float), key
    forget = result["suites"]["forget"]["records"]
    assert len(forget) == 6 and {"prompt", "generation", "prediction", "score"} <= set(forget[0])
    with open(out / "tiny-qwen2" / "summary.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["target", "F-FB"] and rows[1][0] == "1 Stephen King"
    assert float(rows[1][4]) == pytest.approx(100 * result["metrics"]["forget_all_pooled"], abs=1e-3)
    assert (out / "tiny-qwen2" / "summary.md").read_text().startswith("| target | F-FB |")
    assert "| 1 Stephen King |" in capsys.readouterr().out


def test_cli_errors_and_help(shared_data, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--model",
                "unused",
                "--data-dir",
                str(shared_data / "rwku"),
                "--suite",
                "forget,bogus",
                "--out",
                str(tmp_path),
            ]
        )
    assert exit_info.value.code == 2
    completed = subprocess.run(
        [sys.executable, "-m", "verl.eval", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0
    for flag in (
        "--model",
        "--benchmark",
        "--targets",
        "--data-dir",
        "--suite",
        "--out",
        "--icu",
        "--batch-size",
        "--max-probes",
    ):
        assert flag in completed.stdout
