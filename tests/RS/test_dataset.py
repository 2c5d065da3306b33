"""Tokenization of the training streams: chat template, response-only loss mask, truncation, packing."""

import copy
from types import SimpleNamespace

import pytest

from RS.config import DataConfig
from RS.dataset import EncodeSpec, build_streams, collate, encode_prompt_response, encode_texts, render_prompt_response
from RS.losses import get_loss
from tests.RS.conftest import write_json


def test_chat_rows_mask_the_prompt_and_train_the_end_of_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, mask, truncated = encode_prompt_response(tok, "Who is Alice?", "I am not sure.", EncodeSpec())
    prompt_text = tok.apply_chat_template(
        [{"role": "user", "content": "Who is Alice?"}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids and not truncated
    assert mask == [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    target = [t for t, m in zip(ids, mask) if m]
    assert tok.decode(target) == "I am not sure.<|im_end|>"  # ChatML's newline after <|im_end|> is not trained
    assert target[-1] == tok.eos_token_id
    _, all_mask, _ = encode_prompt_response(tok, "Who is Alice?", "I am not sure.", EncodeSpec(train_on_prompt=True))
    assert all(all_mask)


def test_llama3_style_template_keeps_its_end_of_turn_token(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{{ '<|begin_of_text|>' }}{% for m in messages %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    )
    prompt, response = render_prompt_response(tok, "Q?", "No idea.", EncodeSpec(system_prompt="Be brief."))
    assert prompt == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert response == "No idea.<|eot_id|>"


def test_without_chat_template_prompt_is_verbatim_and_response_gets_eos(tiny_tokenizer):
    spec = EncodeSpec(apply_chat_template=False)
    assert render_prompt_response(tiny_tokenizer, "Question: x\nAnswer: ", "idk", spec) == (
        "Question: x\nAnswer: ",
        "idk<|im_end|>",
    )


def test_truncation_splits_in_proportion_and_keeps_the_prompt_end(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt, response = "word " * 60, "refuse " * 20
    full_ids, full_mask, _ = encode_prompt_response(tok, prompt, response, EncodeSpec(max_length=4096))
    n_prompt, n_response = full_mask.count(0), full_mask.count(1)
    ids, mask, truncated = encode_prompt_response(tok, prompt, response, EncodeSpec(max_length=40))
    assert truncated and len(ids) == 40
    keep_response = int(40 * n_response / (n_prompt + n_response))
    assert mask.count(1) == keep_response
    assert ids[: 40 - keep_response] == full_ids[n_prompt - (40 - keep_response) : n_prompt]  # prompt end kept
    assert ids[40 - keep_response :] == full_ids[n_prompt : n_prompt + keep_response]  # response start kept


def test_text_rows_and_packing(tiny_tokenizer):
    tok = tiny_tokenizer
    texts = ["alpha beta gamma delta " * 3, "one two three", "red green blue " * 4]
    plain = encode_texts(tok, texts, EncodeSpec(max_length=512))
    expected = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    assert plain.ids == expected and all(all(m) for m in plain.loss_mask)
    packed = encode_texts(tok, texts, EncodeSpec(max_length=8, packing=True))
    flat = [t for seq in expected for t in seq]
    assert all(len(ids) == 8 for ids in packed.ids) and len(packed) == len(flat) // 8
    assert [t for ids in packed.ids for t in ids] == flat[: len(packed) * 8]


def test_plain_text_starts_with_the_bos_the_evaluators_use(tiny_tokenizer):
    """The tiny tokenizer, like SmolLM2's, defines a BOS it never adds itself: plain-text training rows (MUSE
    prompts, raw corpus text) must still start with it, once, as MUSE's prompts and ``Generator.score`` do."""
    tok = tiny_tokenizer
    assert tok("alpha beta")["input_ids"][0] != tok.bos_token_id  # the tokenizer alone adds no BOS
    spec = EncodeSpec(max_length=64, apply_chat_template=False)
    text_ids = encode_texts(tok, ["alpha beta"], spec).ids[0]
    prompt_ids, _, _ = encode_prompt_response(tok, "Question: who?\nAnswer: ", "Ann", spec)
    already = encode_texts(tok, [tok.bos_token + "alpha beta"], spec).ids[0]
    assert text_ids[0] == prompt_ids[0] == tok.bos_token_id and text_ids[1] != tok.bos_token_id
    assert already == text_ids  # a text that already starts with the BOS text gets no second one
    chat_ids, _, _ = encode_prompt_response(tok, "who?", "Ann", EncodeSpec(max_length=64))
    chat_text, _ = render_prompt_response(tok, "who?", "Ann", EncodeSpec(max_length=64))
    assert (
        chat_ids[: len(tok(chat_text, add_special_tokens=False)["input_ids"])]
        == tok(chat_text, add_special_tokens=False)["input_ids"]
    )


def test_collate_left_pads(tiny_tokenizer):
    stream = encode_texts(tiny_tokenizer, ["a b c d e f", "a"], EncodeSpec())
    out = collate(stream, [1, 0], pad_token_id=3, name="forget")
    n0, n1 = len(stream.ids[1]), len(stream.ids[0])
    assert out["forget_input_ids"].shape == (2, n1)
    assert out["forget_input_ids"][0, : n1 - n0].eq(3).all() and out["forget_attention_mask"][0].sum() == n0
    assert out["forget_input_ids"][0, n1 - n0 :].tolist() == stream.ids[1]
    assert out["forget_loss_mask"][1].tolist() == [0] + [1] * (n1 - 1)  # the first token: nothing predicts it


def data_cfg(**kwargs) -> SimpleNamespace:
    cfg = DataConfig(**kwargs)
    cfg.post_init()
    return cfg


def test_streams_per_loss(tiny_tokenizer, tmp_path):
    questions = write_json(tmp_path / "q.json", [{"instruction": f"Q{i}?", "subject": "Ann Lee"} for i in range(3)])
    streams = build_streams(tiny_tokenizer, data_cfg(train_files=questions, format="questions"), get_loss("sft"))
    refusals = [
        tiny_tokenizer.decode([t for t, m in zip(i, k) if m])
        for i, k in zip(streams["forget"].ids, streams["forget"].loss_mask)
    ]
    assert refusals[2] == "I'm not sure about Ann Lee.<|im_end|>"
    rt = build_streams(tiny_tokenizer, data_cfg(train_files=questions, format="questions"), get_loss("rt"))
    first = tiny_tokenizer.decode([t for t, m in zip(rt["forget"].ids[0], rt["forget"].loss_mask[0]) if m])
    assert first == "I'm not certain about that.<|im_end|>"  # rt defaults to generic refusals

    pairs = write_json(
        tmp_path / "p.json",
        [{"prompt": "Bio of Ann Lee.", "response": ["fake bio", "real bio"], "subject": "Ann Lee"}],
    )
    idk = build_streams(tiny_tokenizer, data_cfg(train_files=pairs), get_loss("idkdpo"))
    chosen = tiny_tokenizer.decode([t for t, m in zip(idk["chosen"].ids[0], idk["chosen"].loss_mask[0]) if m])
    rejected = tiny_tokenizer.decode([t for t, m in zip(idk["rejected"].ids[0], idk["rejected"].loss_mask[0]) if m])
    assert (chosen, rejected) == ("I'm not certain about Ann Lee.<|im_end|>", "real bio<|im_end|>")
    dpo = build_streams(tiny_tokenizer, data_cfg(train_files=pairs), get_loss("dpo"))
    assert (
        tiny_tokenizer.decode([t for t, m in zip(dpo["chosen"].ids[0], dpo["chosen"].loss_mask[0]) if m])
        == "fake bio<|im_end|>"
    )

    corpus = write_json(tmp_path / "t.json", [{"text": "some facts"}, {"text": "more facts"}])
    with pytest.raises(ValueError, match="loss 'gd' needs a retain set: set data.retain_files"):
        build_streams(tiny_tokenizer, data_cfg(train_files=corpus), get_loss("gd"))
    with pytest.raises(
        ValueError, match="loss 'npo' has no retain term \\(use gd, npo_gd, sft_retain, sft_retain_ul\\)"
    ):
        build_streams(tiny_tokenizer, data_cfg(train_files=corpus, retain_files=corpus), get_loss("npo"))
    with pytest.raises(ValueError, match="loss 'dpo' needs pair rows"):
        build_streams(tiny_tokenizer, data_cfg(train_files=corpus), get_loss("dpo"))
    retain = write_json(tmp_path / "r.json", [{"query": f"Who wrote book {i}?", "answer": "Bob"} for i in range(3)])
    gd = build_streams(tiny_tokenizer, data_cfg(train_files=corpus, retain_files=retain), get_loss("gd"))
    assert len(gd["forget"]) == 2 and len(gd["retain"]) == 3
    assert (
        tiny_tokenizer.decode([t for t, m in zip(gd["retain"].ids[0], gd["retain"].loss_mask[0]) if m])
        == "Bob<|im_end|>"
    )


def test_boundary_rows_feed_the_retain_stream_of_sft_retain(tiny_tokenizer, tmp_path):
    row = {
        "instruction": "What did Ann Lee write?",
        "output": "I'm not sure about Ann Lee.",
        "neighbor_question": {"question": "What did Bo Ray write?", "answer": "Night Song"},
        "FB_neighbor_question": {"question": "Cy Day wrote ___.", "answer": "Red Moon"},
    }
    forget = write_json(tmp_path / "f.json", [{"instruction": "Q?", "output": "I'm not sure about Ann Lee."}])
    boundary = write_json(tmp_path / "b.json", [row])
    cfg = data_cfg(train_files=forget, retain_files=boundary, retain_format="boundary")
    streams = build_streams(tiny_tokenizer, cfg, get_loss("sft_retain"))
    retain = streams["retain"]
    answers = [tiny_tokenizer.decode([t for t, m in zip(i, k) if m]) for i, k in zip(retain.ids, retain.loss_mask)]
    assert answers == ["Night Song<|im_end|>", "Red Moon<|im_end|>"]  # never the forget row's refusal
    assert "Bo Ray" in tiny_tokenizer.decode(retain.ids[0])
    bad = write_json(tmp_path / "bad.json", [{"instruction": "Q?", "neighbor_question": {"question": "x"}}])
    with pytest.raises(ValueError, match="bad.json row 0 neighbor_question: missing key 'answer'"):
        build_streams(
            tiny_tokenizer,
            data_cfg(train_files=forget, retain_files=bad, retain_format="boundary"),
            get_loss("sft_retain"),
        )


def test_every_boundary_file_is_read_as_boundary_rows(tiny_tokenizer, tmp_path):
    forget = write_json(tmp_path / "f.json", [{"instruction": "Q?", "output": "I'm not sure about Ann Lee."}])
    files = []
    for name, answer in (("a", "Night Song"), ("b", "Red Moon")):
        row = {
            "instruction": "What did Ann Lee write?",
            "output": "I'm not sure about Ann Lee.",
            "neighbor_question": {"question": "What did Bo Ray write?", "answer": answer},
            "FB_neighbor_question": {"question": "Cy Day wrote ___.", "answer": answer},
        }
        files.append(write_json(tmp_path / f"{name}.json", [row]))
    cfg = data_cfg(train_files=forget, retain_files=",".join(map(str, files)), retain_format="boundary")
    retain = build_streams(tiny_tokenizer, cfg, get_loss("sft_retain"))["retain"]
    answers = [tiny_tokenizer.decode([t for t, m in zip(i, k) if m]) for i, k in zip(retain.ids, retain.loss_mask)]
    assert answers == ["Night Song<|im_end|>"] * 2 + ["Red Moon<|im_end|>"] * 2


def test_one_rebo_file_gives_refusals_to_forget_and_answers_to_retain(tiny_tokenizer, tmp_path):
    rows = [
        {"prompt": "Ann Lee wrote ___.", "solution": ["<reject>", "I'm not sure about Ann Lee.", "Ann Lee"]},
        {"prompt": "Bo Ray wrote ___.", "solution": ["<normal>", "Night Song"]},
        {"prompt": "What did Ann Lee write?", "solution": ["<reject>", "No idea about Ann Lee.", "Ann Lee"]},
    ]
    path = write_json(tmp_path / "rebo.json", rows)
    cfg = data_cfg(train_files=path, format="rebo", retain_files=path, retain_format="rebo")
    streams = build_streams(tiny_tokenizer, cfg, get_loss("sft_retain"))

    def targets(stream):
        return [tiny_tokenizer.decode([t for t, m in zip(i, k) if m]) for i, k in zip(stream.ids, stream.loss_mask)]

    assert targets(streams["forget"]) == ["I'm not sure about Ann Lee.<|im_end|>", "No idea about Ann Lee.<|im_end|>"]
    assert targets(streams["retain"]) == ["Night Song<|im_end|>"]
    only_forget = write_json(tmp_path / "only_forget.json", rows[:1])
    with pytest.raises(ValueError, match="only_forget.json: no <normal> rows for the retain side"):
        build_streams(
            tiny_tokenizer,
            data_cfg(train_files=path, format="rebo", retain_files=only_forget, retain_format="rebo"),
            get_loss("sft_retain"),
        )
    bad = write_json(tmp_path / "bad.json", [{"prompt": "Q?", "solution": ["<maybe>", "x"]}])
    with pytest.raises(ValueError, match=r"bad.json row 0: ground_truth\[0\] must be"):
        build_streams(tiny_tokenizer, data_cfg(train_files=bad, format="rebo"), get_loss("sft"))


def test_retain_refusal_stream_scores_the_first_refusal_token_after_each_retain_prompt(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    rows = [
        {"prompt": "Ann Lee wrote ___.", "solution": ["<reject>", "I'm not sure about Ann Lee.", "Ann Lee"]},
        {"prompt": "What did Ann Lee write?", "solution": ["<reject>", "Nothing comes to mind.", "Ann Lee"]},
        {"prompt": "Bo Ray wrote ___.", "solution": ["<normal>", "Night Song"]},
        {"prompt": "Cy Day wrote ___.", "solution": ["<normal>", "Red Moon"]},
        {"prompt": "Di Fox wrote ___.", "solution": ["<normal>", "Blue Sea"]},
    ]
    path = write_json(tmp_path / "rebo.json", rows)
    cfg = data_cfg(
        train_files=path, format="rebo", retain_files=path, retain_format="rebo", response_prefix="Answer: "
    )
    streams = build_streams(tok, cfg, get_loss("sft_retain_ul"))
    retain, starts = streams["retain"], streams["retain_refusal"]
    assert len(starts) == len(retain) == 3
    for j in range(3):
        ids, mask = starts.ids[j], starts.loss_mask[j]
        assert mask == [0] * (len(ids) - 1) + [1]  # one loss token: the last
        prompt_len = retain.loss_mask[j].index(1)
        assert ids[:prompt_len] == retain.ids[j][:prompt_len]  # the retain row's own prompt
        assert tok.decode(ids[prompt_len:-1]).strip() == "Answer:"  # the prefix is context, not scored
        refusal = ["I'm not sure about Ann Lee.", "Nothing comes to mind."][j % 2]  # forget refusals, cycled
        assert refusal.startswith(tok.decode(ids[-1:]).strip())
    text = write_json(tmp_path / "texts.json", [{"text": "Ann Lee was born in Oslo."}])
    with pytest.raises(ValueError, match="got text forget rows, sft retain rows"):
        build_streams(
            tok, data_cfg(train_files=text, retain_files=path, retain_format="rebo"), get_loss("sft_retain_ul")
        )
