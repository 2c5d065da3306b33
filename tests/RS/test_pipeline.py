"""RS.pipeline: what counts as a complete stage, logged commands, and the error of a failing one."""

import json
import shutil
import sys

import pytest

from RS.pipeline import Pipeline, StageError, eval_done, last_epoch, rebo_done, rs_done, run_logged


def test_rs_run_is_done_only_with_its_summary_and_every_wanted_epoch(tmp_path):
    run = tmp_path / "rs"
    (run / "epoch_1").mkdir(parents=True)
    (run / "epoch_1" / "config.json").write_text("{}")
    assert not rs_done(run, [1])  # killed after the export, before summary.json
    (run / "summary.json").write_text(json.dumps({"exports": [str(run / "epoch_1")]}))
    assert rs_done(run, [1])
    assert not rs_done(run, [1, 2])
    assert last_epoch(run) == run / "epoch_1"


def test_rebo_run_is_done_only_with_its_export(tmp_path):
    (tmp_path / "checkpoints" / "global_step_1").mkdir(parents=True)
    assert not rebo_done(tmp_path)
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    assert rebo_done(tmp_path)


def test_eval_is_done_only_when_every_target_ran_every_suite(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"suites_run": ["forget", "neighbor"], "skipped": {}}))
    assert not eval_done([a, b], ["forget"])
    b.write_text(json.dumps({"suites_run": ["forget"], "skipped": {"neighbor": "no file"}}))
    assert eval_done([a, b], ["forget", "neighbor"])
    assert not eval_done([a, b], ["forget", "mia"])  # asked for a suite the earlier run did not run


def test_a_failing_command_names_the_stage_and_its_log(tmp_path):
    log = tmp_path / "stage.log"
    with pytest.raises(StageError, match=r"stage rs failed \(exit 3\); see .*stage.log"):
        run_logged([sys.executable, "-c", "print('partial'); raise SystemExit(3)"], log, "rs")
    assert "partial" in log.read_text()


def test_a_command_that_exits_0_without_its_output_is_not_taken_as_done(tmp_path):
    pipe = Pipeline(tmp_path, python=shutil.which("true"))  # "succeeds" and writes nothing
    with pytest.raises(StageError, match="ended without"):
        pipe.train_rebo("rebo", tmp_path / "rebo", [])
    with pytest.raises(StageError, match="ended without"):
        pipe.train_rs("rs", tmp_path / "rs", [], [1])


def test_evaluate_without_the_eval_stage_records_only_complete_results(tmp_path):
    pipe = Pipeline(tmp_path)
    pipe.evaluate("RS/epoch1", "rs_epoch1", "unused", ["1_A"], ["forget"], [], "rwku", run=False)
    assert pipe.evaluated == {}
    result = tmp_path / "eval" / "rs_epoch1" / "1_A.json"
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"suites_run": ["forget"], "skipped": {}}))
    pipe.evaluate("RS/epoch1", "rs_epoch1", "unused", ["1_A"], ["forget"], [], "rwku", run=False)
    assert pipe.evaluated == {"RS/epoch1": tmp_path / "eval" / "rs_epoch1"}
