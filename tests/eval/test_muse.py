"""MUSE evaluators: PrivLeak on a hand-computed case, KnowMem prompts and cutting, VerbMem reference truncation.

VerbMem and PrivLeak texts are book prose and not in the shared data: synthetic files in tmp_path stand in.
"""

from __future__ import annotations

import json

import pytest
from rouge_score import rouge_scorer

from verl.eval.generator import CallableGenerator
from verl.eval.muse import privleak_aucs, privleak_features, privleak_score
from verl.eval.suites import run_suites

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

# token log-probs per text (10 tokens each); Min-40% = -mean of the 4 lowest
LOGPROBS = {
    "forget one": [-float(i) for i in range(1, 11)],  # Min-40% = 8.5
    "forget two": [-1.0] * 6 + [-2.5] * 4,  # 2.5
    "holdout one": [-1.0] * 6 + [-4.0] * 4,  # 4.0
    "holdout two": [-1.0] * 10,  # 1.0
    "retain one": [-0.5] * 10,  # 0.5
}


def fake_score(texts, add_bos=True, distribution_stats=False):
    assert add_bos
    return [{"token_ids": list(range(11)), "token_logprobs": LOGPROBS[text]} for text in texts]  # texts are lowercase


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def test_privleak_hand_case(tmp_path, tiny_tokenizer):
    books = tmp_path / "books"
    write(books / "privleak" / "forget.json", ["forget one", "forget two"])
    write(books / "privleak" / "holdout.json", ["holdout one", "holdout two"])
    write(books / "privleak" / "retain.json", ["retain one"])
    generator = CallableGenerator(tiny_tokenizer, lambda p, s: [""] * len(p), score_fn=fake_score)
    result = run_suites(generator, "muse", tmp_path, None, ["muse_privleak"])  # parent of books/ accepted
    metrics = result["metrics"]
    # labels 0 = forget, 1 = holdout, score = -Min-40%: forget (-8.5, -2.5), holdout (-4, -1) -> 3 of 4 pairs
    assert metrics["muse_auc/forget_holdout_Min-40%"] == pytest.approx(0.75)
    assert metrics["muse_privleak_auc"] == pytest.approx(0.75)
    assert metrics["muse_privleak"] == pytest.approx((0.75 - 0.5393) / 0.5393 * 100)
    assert metrics["muse_auc/holdout_forget_Min-40%"] == pytest.approx(0.25)
    first = result["suites"]["muse_privleak"]["records"][0]
    assert first["PPL"] == pytest.approx(5.5) and first["PPL/lower"] == pytest.approx(1.0)
    assert first["Min-5%"] == pytest.approx(10.0) and first["Min-60%"] == pytest.approx(sum(range(5, 11)) / 6)
    own = run_suites(generator, "muse", tmp_path, None, ["muse_privleak"], {"privleak_auc_retrain": 0.6})
    assert own["metrics"]["muse_privleak"] == pytest.approx((0.75 - 0.6) / 0.6 * 100)  # the given reference AUC
    assert privleak_score(0.75, 0.0) is None  # a degenerate reference: the relative gap is undefined


def test_privleak_features_and_aucs_direct():
    scored = {"token_logprobs": [-1.0, -3.0]}
    lower = {"token_logprobs": [-2.0, -2.0]}
    features = privleak_features("Ab", scored, lower)
    assert features["PPL"] == 2.0 and features["PPL/lower"] == 1.0
    import zlib

    assert features["PPL/zlib"] == 2.0 / len(zlib.compress(b"Ab"))
    aucs = privleak_aucs({"forget": [{"x": 1.0}], "holdout": [{"x": 2.0}]})
    assert aucs == {"forget_holdout_x": 0.0, "holdout_forget_x": 1.0}


def icl_prefix(shots):
    return "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)


@pytest.mark.parametrize("icl_type", ["default", "train"])
def test_knowmem_prompts_cutting_and_scores(shared_data, tiny_tokenizer, icl_type):
    root = shared_data / "muse" / "books" / "knowmem"
    load = lambda name: json.loads((root / f"{name}.json").read_text())  # noqa: E731
    expected = {}
    for split in ("forget", "retain"):
        shots = load("train_qa_icl" if icl_type == "train" else f"{split}_qa_icl")
        for item in load(f"{split}_qa")[:4]:
            prompt = "<|im_start|>" + icl_prefix(shots) + f"Question: {item['question']}\nAnswer: "
            expected[prompt] = (split, item["answer"])

    def generate(prompts, sampling):
        assert sampling.max_new_tokens == 32 and sampling.temperature == 0
        replies = []
        for prompt in prompts:
            split, answer = expected[prompt]
            replies.append(
                answer + "\n\nQuestion: another one" if split == "forget" else "I don't know that.\nQuestion"
            )
        return replies

    generator = CallableGenerator(tiny_tokenizer, generate)
    options = {"max_probes": 4, "knowmem_icl_type": icl_type}
    result = run_suites(generator, "muse", shared_data / "muse" / "books", None, ["muse_naturalness"], options)
    records = result["suites"]["muse_knowmem"]["records"]
    assert len(records) == 8
    for record in records:
        split, answer = expected[record["prompt"]]
        reference_prediction = answer if split == "forget" else "I don't know that."
        assert record["prediction"] == reference_prediction
        assert record["score"] == pytest.approx(SCORER.score(answer, reference_prediction)["rougeL"].fmeasure)
    forget_scores = [r["score"] for r in records if r["group"] == "forget"]
    assert result["metrics"]["muse_knowmem_f"] == pytest.approx(sum(forget_scores) / 4) == pytest.approx(1.0)
    assert result["metrics"]["naturalness_refusal_rate_forget"] == 0.0
    assert result["metrics"]["naturalness_false_refusal_rate_retain"] == 1.0


def test_verbmem_reference_truncation_and_score(tmp_path, tiny_tokenizer):
    gt = " ".join(f"word{i} and more text" for i in range(120))
    items = [{"prompt": "Once upon a time", "gt": gt}, {"prompt": "The end", "gt": "short ending"}]
    write(tmp_path / "verbmem" / "forget.json", items)
    seen = []

    def generate(prompts, sampling):
        seen.extend(prompts)
        assert sampling.max_new_tokens == 128 and not sampling.stop
        return ["word0 and more text word1", "short ending"]

    result = run_suites(CallableGenerator(tiny_tokenizer, generate), "muse", tmp_path, None, ["muse_verbmem"])
    assert seen == ["<|im_start|>Once upon a time", "<|im_start|>The end"]
    records = result["suites"]["muse_verbmem"]["records"]
    ids = [tiny_tokenizer.bos_token_id] + tiny_tokenizer(gt, add_special_tokens=False)["input_ids"]
    reference = tiny_tokenizer.decode(ids[:128], skip_special_tokens=True)
    assert records[0]["reference"] == reference and gt.startswith(reference) and len(reference) < len(gt)
    assert records[1]["reference"] == "short ending" and records[1]["score"] == 1.0
    expected = SCORER.score(reference, "word0 and more text word1")["rougeL"].fmeasure
    assert records[0]["score"] == pytest.approx(expected)
    assert result["metrics"]["muse_verbmem_f"] == pytest.approx((expected + 1.0) / 2)
