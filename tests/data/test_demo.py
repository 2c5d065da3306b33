"""The demo's training files: facts, RS rows and ReBO rows in the probe format the evaluator uses."""

import json
import os
from pathlib import Path

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


def test_demo_attack_table_on_a_tiny_model(tmp_path):
    from data.demo import ATTACK_CONFIG, attack, attack_tables
    from verl.utils.models import save_tiny_model_dir

    bench = write_embedded_benchmark(tmp_path / "bench", seed=0)
    model = save_tiny_model_dir(tmp_path / "tiny")
    config = {**ATTACK_CONFIG, "relearn_steps": 1, "relearn_block_tokens": 32}
    reports = [attack(name, model, bench, tmp_path, config) for name in ("before (taught)", "RS")]
    assert reports[0]["metrics"]["attack_n_heldout"] == 10 and reports[0]["metrics"]["attack_n_neighbor"] == 8
    markdown = attack_tables(reports, tmp_path, "before (taught)")
    assert (tmp_path / "attacks.md").read_text() == markdown and (tmp_path / "attacks.csv").is_file()
    lines = markdown.splitlines()
    assert lines[2].startswith("| Method | direct | prefill | prefill answer | multi-turn | 8-bit | 4-bit | relearn |")
    assert "| before (taught) | 100.0 / 100.0 |" in markdown  # the knowledge probe relative to itself
    assert sum(line.startswith("| RS |") for line in lines) == 2  # one row in each of the two tables

    cached = tmp_path / "eval" / "attacks" / "RS.json"
    stamp = cached.stat().st_mtime_ns
    assert attack("RS", model, bench, tmp_path, config)["metrics"] == reports[1]["metrics"]
    assert cached.stat().st_mtime_ns == stamp
    rerun = attack("RS", model, bench, tmp_path, {**config, "attacks": ["knowledge"]})
    assert "attack_prefill_forget" not in rerun["metrics"]  # other settings: run again, not the cached result


def test_demo_table_names_the_detector_and_rejudges_stored_results(tmp_path):
    from data.demo import evaluate, table

    forget = [{"group": "forget", "level": "qa", "index": 0, "prediction": "I can\u2019t say anything about Ann."}]
    neighbor = [{"group": "neighbor", "level": "qa", "index": 0, "prediction": "Unfortunately, it rained."}]
    stored = {"method": "RS", "model": "m", "benchmark": "rwku", "target": {"name": "Ann"}, "options": {},
              "metrics": {"naturalness_refusal_rate_forget": 0.0, "naturalness_false_refusal_rate_neighbor": 1.0},
              "suites": {"forget": {"records": forget}, "neighbor": {"records": neighbor}, "naturalness": {}}}  # fmt: skip
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "RS.json").write_text(json.dumps(stored))  # a run from before detectors were recorded
    result = evaluate("RS", "m", tmp_path, tmp_path, None, "strict")  # reused, not re-generated
    assert result["refusal_detector"] == "strict"
    assert result["metrics"]["naturalness_refusal_rate_forget"] == 1.0
    assert result["metrics"]["naturalness_false_refusal_rate_neighbor"] == 0.0
    assert json.loads((tmp_path / "eval" / "RS.json").read_text())["refusal_detector"] == "strict"
    markdown, csv = table([result], "strict")
    assert markdown.endswith(
        "Refusal(F), Refusal(N), Named: refusal detector `strict` (verl/workers/reward/refusal.py)."
    )
    assert csv.splitlines()[0].endswith(",detector") and csv.splitlines()[1].endswith(",strict")


def test_rt_rows_are_rwkus_rt_file_for_the_embedded_target(tmp_path):
    """RWKU's reject.json: the RS questions, each answered by a generic refusal in turn (no target name)."""
    bench = tmp_path / "bench"
    write_embedded_benchmark(bench, seed=0)
    target_dir = next((bench / "Target").iterdir())
    raw = json.loads((target_dir / "reject_target.json").read_text())
    rows = rt_rows(target_dir, raw[0]["subject"])
    assert [r["prompt"] for r in rows] == [r["instruction"] for r in raw]
    assert [r["response"] for r in rows] == [GENERIC_REFUSALS[i % len(GENERIC_REFUSALS)] for i in range(len(raw))]


def test_the_demo_runs_the_issues_baselines_by_default_and_rejects_an_unknown_one(tmp_path):
    assert build_parser().parse_args([]).baselines == DEMO_BASELINES == "ga,npo,dpo,rt,icu"  # gd: --baselines
    with pytest.raises(ValueError, match=r"unknown baseline 'gaa'"):
        main(["--out", str(tmp_path), "--baselines", "ga,gaa"])
    assert not (tmp_path / "teach").exists()  # stopped before any training


def test_a_stored_result_is_reused_only_for_the_same_model_not_older_than_it(tmp_path):
    from data.demo import load_fresh

    def is_fresh(path, model):
        return load_fresh(path, model) is not None

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = tmp_path / "r.json"
    assert not is_fresh(result, str(model))  # nothing stored
    result.write_text(json.dumps({"model": str(model)}))
    assert is_fresh(result, str(model)) and not is_fresh(result, str(tmp_path / "other"))
    os.utime(model / "config.json", (result.stat().st_mtime + 5,) * 2)  # the model was exported again since
    assert not is_fresh(result, str(model))


def test_a_demo_stage_is_trained_again_when_its_settings_change(tmp_path):
    from data.demo import sft
    from verl.utils.models import save_tiny_model_dir

    model = save_tiny_model_dir(tmp_path / "tiny")
    rows = [{"prompt": f"Q{i}?", "response": f"Answer {i}."} for i in range(4)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    base = ["trainer.batch_size=2", "trainer.micro_batch_size_per_device=2", "trainer.epochs=2"]
    first = sft("stage", model, tmp_path / "rows.json", tmp_path, base)
    assert [Path(p).name for p in first] == ["epoch_2"]
    stamp = (Path(first[-1]) / "config.json").stat().st_mtime_ns
    assert sft("stage", model, tmp_path / "rows.json", tmp_path, base) == first  # the same settings: reused
    assert (Path(first[-1]) / "config.json").stat().st_mtime_ns == stamp
    again = sft("stage", model, tmp_path / "rows.json", tmp_path, [*base[:2], "trainer.epochs=1"])
    assert [Path(p).name for p in again] == ["epoch_1"]  # this run's exports, not the stale epoch_2
