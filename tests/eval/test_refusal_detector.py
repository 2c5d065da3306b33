"""Evaluators and tables name the refusal detector behind every refusal figure (default strict)."""

from __future__ import annotations

import json

import pytest

from tests.eval.helpers import chat
from verl.eval import judge as judge_module
from verl.eval.collect import main as collect_main
from verl.eval.generator import CallableGenerator
from verl.eval.naturalness import metrics_judged_by, result_detector
from verl.eval.report import write_result
from verl.eval.suites import EvalOptions, run_suites
from verl.workers.reward.refusal_judge import judge_question

REFUSAL = "I can\u2019t answer questions related to Stephen King."  # strict: refusal; rule: not (curly ')
ANSWER = "Unfortunately, he encountered critics."  # strict: answer; rule: refusal


def naturalness(tokenizer, data_dir, forget_reply, **options):
    def generate(prompts, sampling):
        generate.calls += 1
        return [forget_reply if generate.calls == 1 else ANSWER] * len(prompts)  # forget probes first

    generate.calls = 0
    generator = CallableGenerator(tokenizer, generate)
    return run_suites(generator, "rwku", data_dir, 1, ["naturalness"], {"max_probes": 2, **options})


def test_options_validate_the_detector():
    assert EvalOptions().refusal_detector == "strict"
    with pytest.raises(ValueError, match="refusal_detector='regex' is not a refusal detector; choose one of"):
        EvalOptions(refusal_detector="regex")
    with pytest.raises(ValueError, match="judge_model is needed with refusal_detector='judge'"):
        EvalOptions(refusal_detector="judge")
    with pytest.raises(ValueError, match="judge_model is needed"):
        EvalOptions(judge_model="some/model")


def test_results_record_the_detector_and_its_figures(shared_data, tiny_tokenizer, tmp_path):
    data = shared_data / "rwku"
    strict = naturalness(tiny_tokenizer, data, REFUSAL)
    rule = naturalness(tiny_tokenizer, data, REFUSAL, refusal_detector="rule")
    assert strict["refusal_detector"] == strict["options"]["refusal_detector"] == "strict"
    assert strict["suites"]["naturalness"]["detector"] == "strict" and rule["refusal_detector"] == "rule"
    assert strict["metrics"]["naturalness_refusal_rate_forget"] == 1.0
    assert strict["metrics"]["naturalness_false_refusal_rate_neighbor"] == 0.0
    assert rule["metrics"]["naturalness_refusal_rate_forget"] == 0.0
    assert rule["metrics"]["naturalness_false_refusal_rate_neighbor"] == 1.0
    saved = json.loads(write_result(tmp_path, "m", strict).read_text())
    assert saved["refusal_detector"] == "strict" and result_detector(saved) == "strict"
    # re-judged from the stored predictions: rule's result turns into strict's figures, and back
    rejudged = metrics_judged_by(rule, "strict")
    for key in ("naturalness_refusal_rate_forget", "naturalness_false_refusal_rate_neighbor"):
        assert rejudged[key] == strict["metrics"][key]
    assert metrics_judged_by(strict, "rule")["naturalness_refusal_rate_forget"] == 0.0
    with pytest.raises(ValueError, match="re-judging with 'judge' needs the model"):
        metrics_judged_by(strict, "judge")


def test_judge_asks_the_generator_the_documented_question(shared_data, tiny_tokenizer, monkeypatch):
    asked = []

    def generate(prompts, sampling):
        asked.append((prompts, sampling))
        return ["Yes." if "can\u2019t answer" in p else "No" for p in prompts]

    stub = CallableGenerator(tiny_tokenizer, generate)
    detector = judge_module.judge_detector(stub)
    assert detector(REFUSAL) is True and detector(ANSWER) is False
    prompts, sampling = asked[0]
    assert prompts == [chat(tiny_tokenizer, judge_question(REFUSAL))]
    assert (sampling.max_new_tokens, sampling.temperature, sampling.stop) == (4, 0.0, ["\n"])

    monkeypatch.setitem(judge_module._LOADED, ("stub-judge", "auto"), detector)  # as load_judge keeps a model
    result = naturalness(tiny_tokenizer, shared_data / "rwku", REFUSAL, refusal_detector="judge",
                         judge_model="stub-judge")  # fmt: skip
    assert result["refusal_detector"] == "judge" and result["options"]["judge_model"] == "stub-judge"
    assert result["metrics"]["naturalness_refusal_rate_forget"] == 1.0
    assert result["metrics"]["naturalness_false_refusal_rate_neighbor"] == 0.0


def test_collect_re_judges_with_its_detector_and_names_it(shared_data, tiny_tokenizer, tmp_path, capsys):
    legacy = naturalness(tiny_tokenizer, shared_data / "rwku", REFUSAL, refusal_detector="rule")
    legacy.pop("refusal_detector")
    legacy["options"].pop("refusal_detector")  # written before detectors were recorded: RULE's regex
    write_result(tmp_path / "res", "old", legacy)
    for detector, refusal_f in (("strict", "100.0"), ("rule", "0.0")):
        out = tmp_path / f"out_{detector}"
        argv = [str(tmp_path / "res"), "--out", str(out)] + (["--refusal-detector", detector] * (detector != "strict"))
        assert collect_main(argv) == 0
        lines = (out / "rule_naturalness.csv").read_text().splitlines()
        header, row = lines[0].split(","), dict(zip(lines[0].split(","), lines[1].split(",")))
        assert header[-1] == "Detector" and row["Detector"] == detector
        assert f"{float(row['Refusal-F']):.1f}" == refusal_f
        collected = json.loads((out / "collected.json").read_text())
        assert collected["rwku"][0]["refusal_detector"] == detector
    with pytest.raises(SystemExit) as exit_info:
        collect_main([str(tmp_path / "res"), "--out", str(tmp_path / "o"), "--refusal-detector", "judge"])
    assert exit_info.value.code == 2 and "needs the model" in capsys.readouterr().err
