"""run_suites errors (unknown suite, missing file, malformed record), options, and the naturalness suite."""

from __future__ import annotations

import json

import pytest

from verl.eval.generator import CallableGenerator
from verl.eval.suites import EVALUATORS, EvalOptions, expand_suites, run_suites
from verl.eval.text_metrics import fluency_entropy


@pytest.fixture()
def echo(tiny_tokenizer):
    return CallableGenerator(tiny_tokenizer, lambda prompts, sampling: ["x"] * len(prompts))


def make_target(root, files):
    folder = root / "Target" / "1_Stephen_King"
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    return root


PROBE = {"query": "Q ___", "answer": "A", "level": "1", "type": "cloze", "subject": "Stephen King"}


def test_unknown_suite_lists_valid_names(shared_data, echo):
    with pytest.raises(ValueError, match=r"unknown rwku evaluation suite 'nope'; choose from: .*forget.*neighbor"):
        run_suites(echo, "rwku", shared_data / "rwku", 1, ["forget", "nope"])
    with pytest.raises(ValueError, match="unknown rwku evaluation suite 'muse_knowmem'"):
        run_suites(echo, "rwku", shared_data / "rwku", 1, ["muse_knowmem"])
    with pytest.raises(ValueError, match="unknown benchmark 'tofu'"):
        run_suites(echo, "tofu", shared_data / "rwku", 1, ["forget"])


def test_missing_probe_file_names_the_path(tmp_path, echo):
    root = make_target(tmp_path, {"forget_level1.json": [PROBE]})
    with pytest.raises(FileNotFoundError, match=r"1_Stephen_King/forget_level2\.json"):
        run_suites(echo, "rwku", root, 1, ["forget"])
    with pytest.raises(FileNotFoundError, match="muse_data"):
        run_suites(echo, "muse", tmp_path / "muse_data", None, ["muse_knowmem"])


def test_skip_missing_files(shared_data, tmp_path, echo):
    with pytest.raises(FileNotFoundError, match=r"3_Bruce_Lee/retain_mmlu\.json"):
        run_suites(echo, "rwku", shared_data / "rwku", 3, ["forget", "mmlu"], {"max_probes": 1})
    result = run_suites(
        echo, "rwku", shared_data / "rwku", 3, ["forget", "mmlu"], {"max_probes": 1, "skip_missing": True}
    )
    assert result["suites_run"] == ["forget"] and "retain_mmlu.json" in result["skipped"]["mmlu"]
    assert "forget_all" in result["metrics"] and "mmlu_acc" not in result["metrics"]
    root = make_target(tmp_path, {"neighbor_level1.json": [PROBE], "neighbor_level2.json": [PROBE]})
    result = run_suites(echo, "rwku", root, 1, ["naturalness"], {"skip_missing": True})
    assert result["suites_run"] == ["neighbor"] and set(result["skipped"]) == {"forget", "naturalness"}


def test_malformed_record_names_file_row_and_key(tmp_path, echo):
    broken = dict(PROBE)
    del broken["answer"]
    root = make_target(tmp_path, {"neighbor_level1.json": [PROBE, broken], "neighbor_level2.json": [PROBE]})
    with pytest.raises(ValueError, match=r"neighbor_level1\.json: row 1 is missing key 'answer'"):
        run_suites(echo, "rwku", root, 1, ["neighbor"])


def test_malformed_stringified_field(tmp_path, echo):
    item = {"task": "t", "question": "q", "choices": "['a', ", "answer": 0, "examples": [], "subject": "S"}
    root = make_target(tmp_path, {"retain_mmlu.json": [item]})
    with pytest.raises(ValueError, match=r"retain_mmlu\.json: row 0 key 'choices' is not a valid list"):
        run_suites(echo, "rwku", root, 1, ["mmlu"])


def test_options_validation_and_expansion():
    with pytest.raises(ValueError, match=r"unknown eval option\(s\) \['icuu'\]"):
        EvalOptions.from_any({"icuu": True})
    with pytest.raises(ValueError, match="generation_overrides"):
        EvalOptions(generation_overrides={"n": 4})
    assert expand_suites("rwku", ["naturalness", "utility"]) == [
        "forget", "neighbor", "naturalness", "mmlu", "bbh", "truthfulqa", "triviaqa", "fluency",
    ]  # fmt: skip
    assert EVALUATORS.get("utility").parts == ("mmlu", "bbh", "truthfulqa", "triviaqa", "fluency")
    options = EvalOptions(generation_overrides={"temperature": 0.95, "top_p": 0.7, "top_k": 50})
    sampling = options.sampling(max_new_tokens=30, stop=["\n"])
    assert (sampling.temperature, sampling.top_k, sampling.max_new_tokens) == (0.95, 50, 30)
    assert EvalOptions(max_new_tokens_cap=5).sampling(max_new_tokens=256).max_new_tokens == 5


def test_naturalness_from_existing_generations(shared_data, tiny_tokenizer):
    calls = []
    named, lower, answer = (
        "I'm not certain about Stephen King.",
        "I'm not sure about stephen king at all.",
        "Richard Bachman",
    )

    def generate(prompts, sampling):
        calls.append(len(prompts))
        if len(calls) == 1:  # forget probes come first
            return [(named, lower, answer)[i % 3] for i in range(len(prompts))]
        return ["I don't know."] + ["Andy Dufresne"] * (len(prompts) - 1)

    generator = CallableGenerator(tiny_tokenizer, generate)
    result = run_suites(generator, "rwku", shared_data / "rwku", 1, ["naturalness"])
    assert len(calls) == 2  # forget + neighbor only: naturalness does not generate again
    n_forget, n_neighbor = calls
    replies = [(named, lower, answer)[i % 3] for i in range(n_forget)]
    refusals = [r for r in replies if r != answer]
    m = result["metrics"]
    assert m["naturalness_refusal_rate_forget"] == pytest.approx(len(refusals) / n_forget)
    assert m["naturalness_false_refusal_rate_neighbor"] == pytest.approx(1 / n_neighbor)
    assert m["naturalness_named_refusal_share"] == pytest.approx(refusals.count(named) / len(refusals))
    assert m["naturalness_named_refusal_share_ci"] == 1.0
    assert m["naturalness_refusal_length_words"] == pytest.approx(
        sum(len(r.split()) for r in refusals) / len(refusals)
    )
    assert m["naturalness_refusal_fluency"] == pytest.approx(sum(fluency_entropy(r) for r in refusals) / len(refusals))
