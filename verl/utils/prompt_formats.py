"""Prompt formats for training rows, shared by RS (SFT) and ReBO (RL) so both stages see the evaluator's prompts.

A format turns one data row's prompt into the text the model is conditioned on, *before* any chat template:

========  ===========================================================================================
plain     the prompt unchanged (RWKU: the chat template is applied afterwards)
rwku      RWKU's probe instruction around the question (cloze with ``___`` -> the fill-in-the-blank form,
          else the short-answer form), so training prompts look like the evaluator's FB / QA probes
muse      RULE's MUSE prompts, no chat template: ``completion`` rows -> ``"Completion: {text}\\nAnswer: "``;
          ``qa`` rows -> the ICL shots (``"Question: q\\nAnswer: a\\n\\n"`` each) + ``"Question: {q}\\nAnswer: "``
          (the same form as MUSE's KnowMem evaluation); the row's ``mode`` key picks the form
========  ===========================================================================================

Adding a format is one function ``fn(prompt, row, shots) -> str`` and ``@PROMPT_FORMATS.register(name)``.

Text without a chat template (MUSE prompts, raw corpus text for GA/NPO, MIA's scored texts) is encoded one way
everywhere, by :func:`encode_plain_text`: the tokenizer's BOS token once, then the text's tokens. Training and
evaluation must agree on it: SmolLM2's tokenizer defines ``<|im_start|>`` as BOS but never adds it itself, so
relying on ``add_special_tokens=True`` taught the MUSE book without the BOS that every MUSE prompt starts with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from verl.utils.config import ConfigError
from verl.utils.registry import Registry

PromptFormat = Callable[[str, dict, Sequence[dict]], str]
PROMPT_FORMATS: Registry[PromptFormat] = Registry("prompt format")
MUSE_MODES = ("qa", "completion")


def encode_plain_text(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's BOS id in front exactly once (none when it defines no BOS)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos_id = tokenizer.bos_token_id
    return [bos_id, *ids] if bos_id is not None and (not ids or ids[0] != bos_id) else ids


FB_TEMPLATE = "Please complete the blank in the following question.\nQuestion: {query}\n"
QA_TEMPLATE = "Please briefly answer the following question.\nQuestion: {query}\n"


@PROMPT_FORMATS.register("plain")
def plain_prompt(prompt: str, row: dict, shots: Sequence[dict]) -> str:
    return prompt


@PROMPT_FORMATS.register("rwku")
def rwku_probe_prompt(prompt: str, row: dict, shots: Sequence[dict]) -> str:
    """RWKU's FB template for a cloze (``___``), else its QA template (BENCHMARKS.md section 1.4)."""
    return (FB_TEMPLATE if "___" in prompt else QA_TEMPLATE).format(query=prompt)


def qa_shots_prefix(shots: Sequence[dict]) -> str:
    """In-context examples ``"Question: q\\nAnswer: a\\n\\n"`` one after another (MUSE KnowMem's form)."""
    return "".join(f"Question: {shot['question']}\nAnswer: {shot['answer']}\n\n" for shot in shots)


def icl_qa_prompt(question: str, shots: Sequence[dict]) -> str:
    """MUSE KnowMem prompt: the shots, then ``"Question: {question}\\nAnswer: "``."""
    return f"{qa_shots_prefix(shots)}Question: {question}\nAnswer: "


@PROMPT_FORMATS.register("muse")
def muse_prompt(prompt: str, row: dict, shots: Sequence[dict]) -> str:
    mode = row.get("mode")
    if mode == "completion":
        return f"Completion: {prompt}\nAnswer: "
    if mode == "qa":
        return icl_qa_prompt(prompt, shots)
    raise ValueError(f"prompt format 'muse' needs a row 'mode' in {MUSE_MODES}, got {mode!r}")


def check_prompt_format(name: str, apply_chat_template: bool, section: str) -> None:
    """Config check: a known format, and no chat template around MUSE prompts (RULE's MUSE setting)."""
    if name not in PROMPT_FORMATS:
        raise ConfigError(
            f"{section}.prompt_format={name!r} is not allowed; choose one of: {', '.join(PROMPT_FORMATS)}"
        )
    if name == "muse" and apply_chat_template:
        raise ConfigError(
            f"{section}.prompt_format=muse needs {section}.apply_chat_template=false (MUSE prompts are raw text)"
        )


def load_shots(path: str) -> list[dict]:
    """ICL shots: a JSON list of ``{question, answer}`` (MUSE ``knowmem/train_qa_icl.json``)."""
    try:
        shots = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"ICL shots file {path} not found (data.icl_file)") from None
    if not isinstance(shots, list) or not all(isinstance(s, dict) and {"question", "answer"} <= set(s) for s in shots):
        raise ValueError(f"{path}: ICL shots must be a JSON list of {{question, answer}} objects")
    return shots


class PromptFormatter:
    """``formatter(prompt, row, where)`` -> the formatted prompt; errors name ``where`` (file and row)."""

    def __init__(self, name: str = "plain", icl_file: Optional[str] = None):
        self.name = name
        self.fn = PROMPT_FORMATS.get(name)
        self.shots: list[dict[str, Any]] = load_shots(icl_file) if icl_file else []

    def __call__(self, prompt: str, row: dict, where: str = "row") -> str:
        try:
            return self.fn(prompt, row, self.shots)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
