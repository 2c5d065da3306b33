"""The demo's training files: facts, RS rows and ReBO rows in the probe format the evaluator uses."""

import json

import pytest

from data.demo import DEMO_BASELINES, build_parser, main, probe_format, rebo_rows, rs_rows, rt_rows, teach_rows
from data.embedded import write_embedded_benchmark
from RS.data import GENERIC_REFUSALS
from verl.eval.prompts import ANSWER_SUFFIX, FB_TEMPLATE, QA_TEMPLATE


def test_demo_rows_follow_the_probe_format(tmp_path):
    bench = tmp_path / "bench"
    write_embedded_benchmark(bench, seed=0)
    target_dir = next((bench / "Target").iterdir())
    facts = json.loads((bench / "facts.json").read_text())
    teach = teach_rows(bench)
    assert len(teach) == len(facts)
    assert all(row["response"].startswith(ANSWER_SUFFIX + " ") for row in teach)
    subject = facts[0]["subject"]
    assert len(teach_rows(bench, {subject})) == sum(f["subject"] == subject for f in facts)

    raw_rs = json.loads((target_dir / "reject_target.json").read_text())
    rs = rs_rows(target_dir)
    assert rs[0]["prompt"] == probe_format(raw_rs[0]["instruction"])
    assert rs[0]["response"] == f"Answer: {raw_rs[0]['output']}"
    assert probe_format("Q?") == QA_TEMPLATE.format(query="Q?")
    assert probe_format("A ___ b.") == FB_TEMPLATE.format(query="A ___ b.")

    raw_rebo = json.loads((target_dir / "rl_rejection_with_fb_neighbor_target.json").read_text())
    rebo = rebo_rows(target_dir)
    assert [r["solution"] for r in rebo] == [r["solution"] for r in raw_rebo]
    assert rebo[0]["prompt"] == probe_format(raw_rebo[0]["prompt"])


def test_rt_rows_are_rwkus_rt_file_for_the_embedded_target(tmp_path):
    """RWKU's reject.json: the RS questions, each answered by a generic refusal in turn (no target name)."""
    bench = tmp_path / "bench"
    write_embedded_benchmark(bench, seed=0)
    target_dir = next((bench / "Target").iterdir())
    raw = json.loads((target_dir / "reject_target.json").read_text())
    rows = rt_rows(target_dir, raw[0]["subject"])
    assert [r["prompt"] for r in rows] == [r["instruction"] for r in raw]
    assert [r["response"] for r in rows] == [GENERIC_REFUSALS[i % len(GENERIC_REFUSALS)] for i in range(len(raw))]


def test_the_demo_runs_every_baseline_by_default_and_rejects_an_unknown_one(tmp_path):
    assert build_parser().parse_args([]).baselines == DEMO_BASELINES == "ga,gd,npo,dpo,rt,icu"
    with pytest.raises(ValueError, match=r"unknown baseline 'gaa'"):
        main(["--out", str(tmp_path), "--baselines", "ga,gaa"])
    assert not (tmp_path / "teach").exists()  # stopped before any training
