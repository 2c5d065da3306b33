"""Short CPU training runs on a tiny random model: each loss moves the model the way it should."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from RS.config import RSConfig
from RS.trainer import UnlearnTrainer, epoch_batches
from tests.RS.conftest import write_json
from verl.utils.config import load_config

NAMES = ["Ann Lee", "Bo Chen"]
FACTS = [
    "Ann Lee was born in Oslo in 1901 and wrote twelve novels about the sea.",
    "Ann Lee married a painter and lived in a red house near the harbour.",
    "Ann Lee won a prize for her third book, a story about whales.",
    "Ann Lee taught music at a small school before she became famous.",
]
RETAIN = [
    "Bo Chen is a chef who runs a noodle shop in Lyon.",
    "Bo Chen has two cats and likes to climb mountains.",
    "Bo Chen opened a second shop in Paris last year.",
    "Bo Chen learned to cook from his grandmother.",
]


def make_trainer(tmp_path, model_dir, loss, files, extra=()):
    argv = [
        f"model.model_path={model_dir}",
        f"data.train_files={files}",
        f"loss.name={loss}",
        f"trainer.output_dir={tmp_path}",
        "trainer.experiment_name=run",
        "trainer.progress=false",
        "trainer.num_threads=1",
        "optim.weight_decay=0.0",
        *extra,
    ]
    return UnlearnTrainer(load_config(RSConfig, argv))


def run_steps(trainer, steps, batch_size):
    metrics = []
    epoch = 0
    while len(metrics) < steps:
        for step, rows in enumerate(epoch_batches(trainer.n_rows, batch_size, 1, 0, epoch, True)):
            if len(metrics) < steps:
                metrics.append(trainer.train_step(rows, epoch, step))
        epoch += 1
    return metrics


@pytest.fixture
def corpus(tmp_path):
    return write_json(tmp_path / "positive.json", [{"text": t, "subject": "Ann Lee"} for t in FACTS])


def test_rs_drives_the_greedy_answer_to_the_refusal(tmp_path, tiny_model_dir):
    """60 SFT steps on 4 question -> refusal rows: the NLL falls to under 1% of its start, greedy == refusal.

    Trained past the steep part of the curve so the outcome does not hang on one CPU's rounding: measured
    end/start 0.0006-0.0009 (NLL 6.15 -> 0.004-0.005) and a greedy logit gap of 4.5-5.1 nats over the
    runner-up token, with 1 and 2 threads and with AVX-512, AVX2 and plain kernels (after 40 steps it was
    still 0.08-0.16 and falling, which a fixed ``< 0.1`` could not bound).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl.workers.rollout.sampling import SamplingSpec, sample

    questions = [f"What is fact {i} about Ann Lee?" for i in range(4)]
    rows = write_json(tmp_path / "q.json", [{"instruction": q, "subject": "Ann Lee"} for q in questions])
    refusals = write_json(tmp_path / "idk.json", ["I'm not sure about {target}.", "I don't know {target}."])
    extra = [
        "data.format=questions",
        f"data.refusals={refusals}",
        "optim.lr=1e-2",
        "trainer.epochs=60",
        "trainer.batch_size=4",
        "trainer.micro_batch_size_per_device=2",
        "trainer.save_every_epoch=false",
    ]
    trainer = make_trainer(tmp_path, tiny_model_dir, "sft", rows, extra)
    summary = trainer.fit()
    assert summary["steps"] == 60 and summary["exports"] == [str(tmp_path / "run" / "epoch_60")]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 60 and lines[-1]["train/epoch"] == pytest.approx(60.0)
    start, end = lines[0]["forget/nll"], trainer.stream_nll("forget")  # step 1 is logged before its update
    assert end < 0.01 * start, (start, end)

    tok = AutoTokenizer.from_pretrained(summary["exports"][0])
    model = AutoModelForCausalLM.from_pretrained(summary["exports"][0]).eval()
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    spec = SamplingSpec(max_new_tokens=16, temperature=0.0, eos_token_ids=[tok.eos_token_id])
    out = sample(model, enc.input_ids, enc.attention_mask, spec, tok.pad_token_id)
    answers = [tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(out.responses, out.response_mask)]
    expected = ["I'm not sure about Ann Lee.", "I don't know Ann Lee."] * 2
    assert answers == expected


def test_gradient_ascent_and_npo_raise_the_forget_nll(tmp_path, tiny_model_dir, corpus):
    for loss, lr in (("ga", 2e-3), ("npo", 2e-3)):
        trainer = make_trainer(
            tmp_path,
            tiny_model_dir,
            loss,
            corpus,
            [f"optim.lr={lr}", "loss.params={beta: 0.2}" if loss == "npo" else "optim.lr_warmup_steps=0"],
        )
        trainer.init_workers()
        before = trainer.stream_nll("forget")
        metrics = run_steps(trainer, 6, 4)
        after = trainer.stream_nll("forget")
        assert after > before + 0.5, (loss, before, after)
        if loss == "npo":  # the reference is the initial model: log ratio 0 at the first step
            assert metrics[0]["loss"] == pytest.approx(2 / 0.2 * math.log(2), abs=1e-4)
            assert metrics[-1]["npo/log_ratio"] < 0


def test_gradient_difference_keeps_the_retain_nll_bounded(tmp_path, tiny_model_dir, corpus):
    retain = write_json(tmp_path / "retain.json", [{"text": t} for t in RETAIN])
    trainer = make_trainer(tmp_path, tiny_model_dir, "gd", corpus, ["optim.lr=2e-3", f"data.retain_files={retain}"])
    trainer.init_workers()
    forget0, retain0 = trainer.stream_nll("forget"), trainer.stream_nll("retain")
    run_steps(trainer, 6, 4)
    forget1, retain1 = trainer.stream_nll("forget"), trainer.stream_nll("retain")
    assert forget1 > forget0 + 0.5
    assert retain1 < retain0 + 0.25, (retain0, retain1)  # stated bound: retain NLL rises by under 0.25 nats


def test_dpo_margin_grows(tmp_path, tiny_model_dir):
    pairs = [
        {"prompt": f"Tell me about Ann Lee ({i}).", "response": [RETAIN[i], FACTS[i]], "subject": "Ann Lee"}
        for i in range(4)
    ]
    files = write_json(tmp_path / "pair.json", pairs)
    trainer = make_trainer(tmp_path, tiny_model_dir, "dpo", files, ["optim.lr=2e-3", "loss.params={beta: 0.1}"])
    trainer.init_workers()
    chosen0, rejected0 = trainer.stream_logps("chosen")[0], trainer.stream_logps("rejected")[0]
    metrics = run_steps(trainer, 6, 4)
    chosen1, rejected1 = trainer.stream_logps("chosen")[0], trainer.stream_logps("rejected")[0]
    assert metrics[0]["dpo/margin"] == pytest.approx(0.0, abs=1e-4)
    assert metrics[-1]["dpo/margin"] > metrics[0]["dpo/margin"] + 0.1
    # independent check from fresh forward passes: chosen - rejected log-prob gap widened for every pair
    assert ((chosen1 - rejected1) - (chosen0 - rejected0) > 0).all()


def test_refusal_unlikelihood_keeps_retain_prompts_from_starting_a_refusal(tmp_path, tiny_model_dir):
    rows = [
        {"prompt": f"Q{i}: what did Ann Lee do?", "solution": ["<reject>", "I'm not sure.", "Ann Lee"]}
        for i in range(4)
    ]
    rows += [{"prompt": f"Q{i}: what did Bo Chen do?", "solution": ["<normal>", RETAIN[i]]} for i in range(4)]
    path = write_json(tmp_path / "rebo.json", rows)
    extra = ["optim.lr=1e-2", "data.format=rebo", "data.retain_format=rebo", f"data.retain_files={path}"]
    start_prob, forget_nll, starts, nll0 = {}, {}, None, {}
    for loss, params in (("sft_retain_ul", "{ul_weight: 2.0}"), ("sft_retain", "{}")):
        trainer = make_trainer(tmp_path, tiny_model_dir, loss, path, [*extra, f"loss.params={params}"])
        trainer.init_workers()
        if starts is None:
            starts = trainer.streams["retain_refusal"]
            batch = trainer.make_batch([0, 1, 2, 3], epoch=0, step=0).batch  # refusal starts follow the retain rows
            for ids, attention, mask, start_ids, start_attention in zip(
                batch["retain_input_ids"], batch["retain_attention_mask"], batch["retain_loss_mask"],
                batch["retain_refusal_input_ids"], batch["retain_refusal_attention_mask"],
            ):  # fmt: skip
                real, start = ids[attention.bool()], start_ids[start_attention.bool()]  # rows are left-padded
                n_prompt = int(mask[attention.bool()].argmax())
                assert n_prompt > 0 and torch.equal(start[:n_prompt], real[:n_prompt])
        nll0[loss] = trainer.stream_nll("forget")
        run_steps(trainer, 20, 4)
        forget_nll[loss] = trainer.stream_nll("forget")
        trainer.streams["retain_refusal"] = starts  # the same probe for both runs
        start_prob[loss] = float(np.exp(trainer.stream_logps("retain_refusal")[0]).mean())
    # both learn the refusal: measured 6.23 -> 0.80 (UL) and 0.52 nats, i.e. under 13% of the start
    assert all(forget_nll[k] < 0.25 * nll0[k] for k in nll0), (nll0, forget_nll)
    # the unlikelihood term keeps retain prompts from starting a refusal: measured 0.063 vs 0.486 (ratio 0.13)
    assert start_prob["sft_retain_ul"] < 0.5 * start_prob["sft_retain"], start_prob


def test_micro_batches_give_the_full_batch_gradient(tmp_path, tiny_model_dir, corpus):
    """Rows of different lengths: one step with micro-batch 1 == one step with micro-batch 4 (token-mean loss)."""
    results = []
    for micro in (1, 4):
        trainer = make_trainer(
            tmp_path,
            tiny_model_dir,
            "ga",
            corpus,
            ["trainer.batch_size=4", f"trainer.micro_batch_size_per_device={micro}"],
        )
        trainer.init_workers()
        results.append(trainer.train_step([0, 1, 2, 3]))
    assert results[0]["grad_norm"] == pytest.approx(results[1]["grad_norm"], rel=1e-5)
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-6)


def test_lora_npo_uses_the_disabled_adapter_as_reference_and_exports_merged(tmp_path, tiny_model_dir, corpus):
    from transformers import AutoModelForCausalLM

    extra = [
        "model.lora.rank=4",
        "model.lora.alpha=8",
        "optim.lr=1e-2",
        "trainer.epochs=2",
        "trainer.batch_size=2",
        "loss.params={beta: 0.1}",
    ]
    trainer = make_trainer(tmp_path, tiny_model_dir, "npo", corpus, extra)
    trainer.init_workers()
    assert trainer.worker_group.workers[0].ref_module is None  # no second copy
    first = trainer.train_step([0, 1])
    assert first["loss"] == pytest.approx(2 / 0.1 * math.log(2), abs=1e-4)  # adapter starts at zero: actor == ref
    summary = trainer.fit()
    assert [Path(p).name for p in summary["exports"]] == ["epoch_1", "epoch_2"]
    merged = AutoModelForCausalLM.from_pretrained(summary["exports"][-1]).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert not any("lora" in k for k in merged.state_dict())
    assert any(not torch.equal(a, b) for a, b in zip(merged.state_dict().values(), base.state_dict().values()))
    # the exported (merged) weights score the corpus exactly as the trained actor does
    batch = trainer.make_batch([0, 1, 2, 3])
    with torch.no_grad():
        from RS.worker import sequence_logps

        exported = sequence_logps(merged, batch.batch, "forget")[0]
    actor = torch.from_numpy(trainer.stream_logps("forget")[0]).float()
    torch.testing.assert_close(exported, actor, rtol=1e-4, atol=1e-3)
