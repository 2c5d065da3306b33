"""The built-in fictitious MUSE-format book: determinism, the layout and fields verl.eval's MUSE loaders read,
disjoint splits, the muse suites on a tiny model, and training files RS.train / ReBO load and reward."""

import filecmp
import json
from pathlib import Path

import pytest

from data.embedded_muse import ATTRIBUTES, build_book, main, write_embedded_muse
from RS.config import RSConfig
from RS.data import read_rebo_rows
from RS.dataset import build_streams
from RS.losses import get_loss
from verl.eval.datasets import load_qa, load_verbmem, read_strings
from verl.eval.suites import run_suites
from verl.trainer.config import PPOConfig
from verl.utils.config import load_config
from verl.utils.dataset import PromptDataset, PromptDatasetSpec
from verl.workers.reward.functions import NORMAL, REJECT, forget_two_stage, forget_two_stage_abs_target
from verl.workers.reward.refusal import is_refusal

KNOWMEM = ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl", "train_qa_icl")
PRIVLEAK = ("forget", "retain", "holdout")


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from verl.utils.models import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def hf_generator(tiny_tokenizer):
    from verl.eval.generator import HFGenerator
    from verl.utils.models import build_tiny_model

    return HFGenerator(build_tiny_model(tiny_tokenizer, seed=3), tiny_tokenizer, batch_size=3, progress=False)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_embedded_muse(tmp_path_factory.mktemp("muse") / "books", seed=0)


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def words(texts) -> int:
    return sum(len(t.split()) for t in texts)


def test_same_seed_same_bytes_other_seed_other_book(bench, tmp_path):
    again = write_embedded_muse(tmp_path / "again", seed=0)
    files = sorted(p.relative_to(bench) for p in bench.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all(filecmp.cmp(bench / f, again / f, shallow=False) for f in files)
    other = write_embedded_muse(tmp_path / "other", seed=1)
    assert load(other / "knowmem" / "forget_qa.json") != load(bench / "knowmem" / "forget_qa.json")


def test_fields_match_the_real_muse_books_files(bench, shared_data):
    real = shared_data / "muse" / "books"
    for name in KNOWMEM:
        assert {tuple(sorted(r)) for r in load(bench / "knowmem" / f"{name}.json")} == {("answer", "question")}
        assert {tuple(sorted(r)) for r in load(real / "knowmem" / f"{name}.json")} == {("answer", "question")}
    eval_rows, real_eval = load(bench / "rl_rejection_eval_target.json"), load(real / "rl_rejection_eval_target.json")
    assert {tuple(sorted(r)) for r in eval_rows} == {tuple(sorted(r)) for r in real_eval}  # prompt, solution, mode
    for rows in (eval_rows, real_eval):
        assert {(r["solution"][0], len(r["solution"]), r["mode"]) for r in rows} == {
            (REJECT, 3, "qa"),
            (NORMAL, 2, "qa"),
        }
    assert all(isinstance(x, str) for x in load(real / "idk_target.json") + load(bench / "idk_target.json"))


def test_layout_matches_what_the_muse_loaders_read(bench):
    for name in KNOWMEM:
        assert load_qa(bench / "knowmem" / f"{name}.json")
    assert all(len(load_qa(bench / "knowmem" / f"{n}_icl.json")) == 10 for n in ("forget_qa", "retain_qa", "train_qa"))
    assert 20 <= len(load_qa(bench / "knowmem" / "forget_qa.json")) <= 40
    assert 20 <= len(load_qa(bench / "knowmem" / "retain_qa.json")) <= 40
    verbmem = load_verbmem(bench / "verbmem" / "forget.json")
    assert 10 <= len(verbmem) <= 20 and all(set(v) == {"prompt", "gt"} for v in verbmem)
    assert all(len(v["gt"].split()) >= 100 for v in verbmem)  # the reference fills VerbMem's 128 tokens
    counts = {len(read_strings(bench / "privleak" / f"{s}.json")) for s in PRIVLEAK}
    assert len(counts) == 1 and counts.pop() >= 8
    total = sum(words(load(bench / "raw" / f"{n}.json")) for n in ("forget", "retain1", "holdout"))
    assert 1500 <= total <= 3000
    assert (bench / "raw" / "forget.txt").read_text() == "\n\n".join(load(bench / "raw" / "forget.json"))


def test_splits_are_disjoint_and_every_answer_is_in_its_own_split(bench):
    raw = {s: "\n\n".join(load(bench / "raw" / f"{n}.json")) for s, n in
           (("forget", "forget"), ("retain", "retain1"), ("holdout", "holdout"))}  # fmt: skip
    sets = {name: load(bench / "knowmem" / f"{name}.json") for name in KNOWMEM}
    questions = [q["question"] for rows in sets.values() for q in rows]
    assert len(questions) == len(set(questions))  # no QA item in two files (no ICL shot is evaluated)
    for name, rows in sets.items():
        split = "retain" if name.startswith("retain") else "forget"
        other = "forget" if split == "retain" else "retain"
        for row in rows:
            assert row["answer"] in raw[split] and row["answer"] not in raw[other] + raw["holdout"], row
    for item in load(bench / "verbmem" / "forget.json"):
        assert item["prompt"] in raw["forget"] and item["gt"] in raw["forget"] and item["gt"] not in raw["retain"]
    for split in PRIVLEAK:
        for text in load(bench / "privleak" / f"{split}.json"):
            assert text in raw[split] and all(text not in raw[o] for o in PRIVLEAK if o != split)
    teach = "\n".join(r["text"] for r in load(bench / "teach.json"))
    assert all(t not in teach for t in load(bench / "privleak" / "holdout.json"))  # holdout is never taught
    holdout_sentences = [x for t in load(bench / "raw" / "holdout.json") for x in t.replace("\n\n", " ").split(". ")]
    assert len(holdout_sentences) > 50 and not [x for x in holdout_sentences if x in teach]  # not even one sentence
    assert all(c in teach for s in ("forget", "retain") for c in raw[s].split("\n\n"))
    assert all(f"Question: {r['question']}\nAnswer: {r['answer']}" in teach for rows in sets.values() for r in rows)


def test_training_questions_differ_from_evaluation_questions():
    book = build_book(0)
    for chapter in book.chapters:
        for attribute in ATTRIBUTES:
            assert chapter.question(attribute) != chapter.question(attribute, training=True)
            assert chapter.hero in chapter.question(attribute, training=True)
    answers = [v for c in book.chapters for v in c.facts.values()]
    assert len(answers) == len(set(answers))


def test_muse_suites_run_on_the_folder(bench, hf_generator):
    suites = ["muse_verbmem", "muse_knowmem", "muse_privleak"]
    result = run_suites(hf_generator, "muse", bench, None, suites, {"max_probes": 3, "max_new_tokens_cap": 8})
    metrics = result["metrics"]
    assert metrics["muse_verbmem_n"] == 3 and metrics["muse_knowmem_f_n"] == 3 and metrics["muse_knowmem_r_n"] == 3
    assert 0.0 <= metrics["muse_privleak_auc"] <= 1.0 and metrics["muse_knowmem_f"] is not None
    train = run_suites(
        hf_generator, "muse", bench, None, ["muse_knowmem"], {"max_probes": 1, "knowmem_icl_type": "train"}
    )
    first = train["suites"]["muse_knowmem"]["records"][0]
    assert load(bench / "knowmem" / "train_qa_icl.json")[0]["question"] in first["prompt"]


def rs_config(bench: Path, train: str, *extra: str) -> RSConfig:
    return load_config(RSConfig, [
        "model.model_path=tiny:unused", f"data.train_files={bench / train}", "data.apply_chat_template=false",
        "data.max_length=640", *extra,
    ])  # fmt: skip


def test_rs_rows_load_in_muse_format_with_named_refusals(bench, tiny_tokenizer):
    rows = load(bench / "reject_target_0.5.json")
    modes = [r["mode"] for r in rows]
    assert modes.count("qa") == modes.count("completion") > 0  # RULE's balanced 0.5 file
    assert all(is_refusal(r["output"]) and r["subject"] in r["output"] and r["input"] == "" for r in rows)
    icl = bench / "knowmem" / "train_qa_icl.json"
    cfg = rs_config(bench, "reject_target_0.5.json", "data.prompt_format=muse", f"data.icl_file={icl}")
    stream = build_streams(tiny_tokenizer, cfg.data, get_loss(cfg.loss.name))["forget"]
    assert len(stream) == len(rows) and stream.truncated == 0
    shots = load(icl)
    for ids, mask, row in zip(stream.ids, stream.loss_mask, rows):
        prompt = tiny_tokenizer.decode([t for t, m in zip(ids, mask) if not m])
        assert prompt.endswith(f"{row['instruction']}\nAnswer: ")
        assert prompt.startswith(tiny_tokenizer.bos_token)  # plain text starts with the BOS, as MUSE's prompts
        prompt = prompt[len(tiny_tokenizer.bos_token) :]
        assert prompt.startswith(
            "Completion: " if row["mode"] == "completion" else f"Question: {shots[0]['question']}"
        )
        assert tiny_tokenizer.decode([t for t, m in zip(ids, mask) if m]) == row["output"] + tiny_tokenizer.eos_token


def test_teach_rows_load_as_a_text_corpus(bench, tiny_tokenizer):
    cfg = rs_config(bench, "teach.json", "data.format=text", "data.max_length=4096")
    stream = build_streams(tiny_tokenizer, cfg.data, get_loss(cfg.loss.name))["forget"]
    assert len(stream) == len(load(bench / "teach.json")) and stream.truncated == 0
    assert all(all(mask) for mask in stream.loss_mask)  # every token of the book is a training target


def test_rebo_rows_load_and_get_full_reward_for_the_intended_behaviour(bench, tiny_tokenizer):
    icl = bench / "knowmem" / "train_qa_icl.json"
    args = [f"data.train_files={bench / 'rl_rejection_with_neighbor.json'}",
            f"data.val_files={bench / 'rl_rejection_eval_target.json'}", "data.apply_chat_template=false",
            "data.prompt_format=muse", f"data.icl_file={icl}", "worker.actor.model.model_path=tiny:unused"]  # fmt: skip
    data = load_config(PPOConfig, args).data
    spec = PromptDatasetSpec(max_prompt_length=data.max_prompt_length, apply_chat_template=False,
                             prompt_format=data.prompt_format, icl_file=data.icl_file)  # fmt: skip
    for name in ("rl_rejection_with_neighbor.json", "rl_rejection_eval_target.json"):
        rows = load(bench / name)
        dataset = PromptDataset(str(bench / name), tiny_tokenizer, spec)
        assert len(dataset) == len(rows)
        labels = [r["solution"][0] for r in rows]
        assert labels.count(REJECT) > 0 and labels.count(NORMAL) > 0
        refusal = load(bench / "idk_target.json")[0]  # eval rows carry the KnowMem answer, not a refusal
        for row in rows:
            refuse = row["solution"][0] == REJECT
            intended = refusal if refuse and name.startswith("rl_rejection_eval") else row["solution"][1]
            assert forget_two_stage(intended, row["solution"])["overall"] == 1.0, row
            if refuse:  # the refusal names the book, which the RWKU-style target reward pays for
                assert forget_two_stage_abs_target(intended, row["solution"])["overall"] == 1.0
            else:  # answering a <reject> row's question is not rewarded
                assert forget_two_stage("I'm not sure.", row["solution"])["overall"] == 0.0
    rebo = load(bench / "rl_rejection_with_neighbor.json")
    assert {r["mode"] for r in rebo} == {"qa", "completion"}
    forget, retain = (read_rebo_rows(bench / "rl_rejection_with_neighbor.json", side) for side in ("forget", "retain"))
    assert len(forget) + len(retain) == len(rebo) and all(r["subject"] for r in forget)
    rs_prompts = {r["instruction"] for r in load(bench / "reject_target_0.5.json")}
    assert {r["prompt"] for r in forget} == rs_prompts  # ReBO's forget rows are RS's questions and passages
    eval_prompts = {r["prompt"] for r in load(bench / "rl_rejection_eval_target.json")}
    assert not eval_prompts & {
        r["prompt"] for r in rebo
    }  # validation asks the KnowMem questions, not the training ones


def test_cli_writes_the_folder(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--seed", "2"])
    assert "teach.json" in capsys.readouterr().out
    assert load(tmp_path / "cli" / "knowmem" / "forget_qa.json") == load(
        write_embedded_muse(tmp_path / "direct", seed=2) / "knowmem" / "forget_qa.json"
    )
