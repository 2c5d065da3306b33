"""Prompt formats shared by RS and ReBO: MUSE rows get the evaluator's prompts; bad rows and configs fail clearly."""

import json

import pytest

from RS.config import DataConfig
from RS.dataset import build_streams
from RS.losses import get_loss
from verl.eval.muse import knowmem_prompt
from verl.trainer.config import DataConfig as RLDataConfig
from verl.utils.config import ConfigError
from verl.utils.dataset import PromptDataset, PromptDatasetSpec
from verl.utils.models import build_tiny_tokenizer
from verl.utils.prompt_formats import PROMPT_FORMATS, PromptFormatter

SHOTS = [{"question": "Who flies?", "answer": "owls"}, {"question": "Who hops?", "answer": "frogs"}]


@pytest.fixture()
def shots_file(tmp_path):
    path = tmp_path / "icl.json"
    path.write_text(json.dumps(SHOTS))
    return str(path)


def test_muse_prompts_by_mode(shots_file):
    fmt = PromptFormatter("muse", shots_file)
    assert fmt("Harry waved.", {"mode": "completion"}) == "Completion: Harry waved.\nAnswer: "
    expected = "Question: Who flies?\nAnswer: owls\n\nQuestion: Who hops?\nAnswer: frogs\n\nQuestion: Who?\nAnswer: "
    assert fmt("Who?", {"mode": "qa"}) == expected
    assert PromptFormatter("plain")("Who?", {"mode": "qa"}) == "Who?"
    with pytest.raises(ValueError, match="f.json row 3: prompt format 'muse' needs a row 'mode'"):
        fmt("Who?", {}, "f.json row 3")
    with pytest.raises(KeyError, match="unknown prompt format 'mus'"):
        PromptFormatter("mus")
    assert set(PROMPT_FORMATS.names()) >= {"plain", "muse", "rwku"}


def test_rwku_probe_format_is_the_evaluators_template():
    from verl.eval.prompts import FB_TEMPLATE, QA_TEMPLATE

    fmt = PromptFormatter("rwku")
    assert (
        fmt("Who wrote Carrie?", {}) == "Please briefly answer the following question.\nQuestion: Who wrote Carrie?\n"
    )
    assert fmt("King wrote ___.", {}) == FB_TEMPLATE.format(query="King wrote ___.")
    assert QA_TEMPLATE.startswith("Please briefly answer")


def test_rl_qa_prompt_is_the_knowmem_eval_prompt(shared_data):
    """ReBO trains on the exact prompt the MUSE KnowMem evaluator asks (RULE's icl_type=train shots)."""
    icl_file = shared_data / "muse" / "books" / "knowmem" / "train_qa_icl.json"
    row = json.loads((shared_data / "muse" / "books" / "rl_rejection_eval_target.json").read_text())[0]
    shots = json.loads(icl_file.read_text())
    assert PromptFormatter("muse", str(icl_file))(row["prompt"], row) == knowmem_prompt(shots, row["prompt"])


def test_rl_and_rs_datasets_format_muse_rows(tmp_path, shots_file):
    tokenizer = build_tiny_tokenizer()
    rows = [
        {"prompt": "Who?", "solution": ["<reject>", "x", "books"], "mode": "qa"},
        {"prompt": "Harry waved.", "solution": ["<normal>", "y"], "mode": "completion"},
    ]
    rl_file = tmp_path / "rl.json"
    rl_file.write_text(json.dumps(rows))
    spec = PromptDatasetSpec(apply_chat_template=False, prompt_format="muse", icl_file=shots_file)
    dataset = PromptDataset(str(rl_file), tokenizer, spec)
    bos = tokenizer.bos_token or ""
    assert dataset.render(dataset.raw_prompts[1]) == f"{bos}Completion: Harry waved.\nAnswer: "
    assert tokenizer.decode(dataset.prompt_ids[0]).endswith("Question: Who?\nAnswer: ")

    rs_file = tmp_path / "rs.json"
    rs_file.write_text(json.dumps([{"instruction": "Who?", "output": "I don't know Harry Potter.", "mode": "qa"}]))
    cfg = DataConfig(train_files=str(rs_file), apply_chat_template=False, prompt_format="muse", icl_file=shots_file)
    cfg.post_init()
    stream = build_streams(tokenizer, cfg, get_loss("sft"))["forget"]
    prompt_ids = [t for t, m in zip(stream.ids[0], stream.loss_mask[0]) if not m]
    assert tokenizer.decode(prompt_ids).endswith("Question: Who hops?\nAnswer: frogs\n\nQuestion: Who?\nAnswer: ")


def test_muse_format_with_chat_template_is_a_config_error():
    for cfg in (RLDataConfig(prompt_format="muse"), DataConfig(prompt_format="muse")):
        with pytest.raises(ConfigError, match="data.prompt_format=muse needs data.apply_chat_template=false"):
            cfg.post_init()
    with pytest.raises(ConfigError, match="data.prompt_format='x' is not allowed; choose one of: muse, plain, rwku"):
        RLDataConfig(prompt_format="x").post_init()


def test_rs_rows_in_rwku_probe_format_with_answer_cue(tmp_path):
    tokenizer = build_tiny_tokenizer()
    rs_file = tmp_path / "rs.json"
    rs_file.write_text(json.dumps([{"instruction": "Who wrote Carrie?", "output": "I'm not sure about Ann Lee."}]))
    cfg = DataConfig(train_files=str(rs_file), prompt_format="rwku", response_prefix="Answer: ")
    cfg.post_init()
    stream = build_streams(tokenizer, cfg, get_loss("sft"))["forget"]
    trained = tokenizer.decode([t for t, m in zip(stream.ids[0], stream.loss_mask[0]) if m])
    assert trained.startswith("Answer: I'm not sure about Ann Lee.")
    assert "Please briefly answer the following question.\nQuestion: Who wrote Carrie?" in tokenizer.decode(
        stream.ids[0]
    )
