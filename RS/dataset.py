"""Tokenized training streams for the unlearning trainer: chat template, loss masks, truncation, packing.

A *stream* is one list of token sequences with a 0/1 loss mask per token (1 = the token is a training
target). Losses read one or more streams (``forget``; ``retain``; ``chosen`` + ``rejected``), all
aligned row by row except ``retain``, which is cycled alongside ``forget`` (and ``retain_refusal``,
aligned with ``retain``: its prompts, each followed by the first token of a forget refusal).

* prompt/response rows: ``chat_template([system?, user: prompt], add_generation_prompt=True)`` is
  the prompt; the response is exactly what the template appends for the assistant turn (the
  refusal plus the end-of-turn token, e.g. ``<|eot_id|>`` for Llama-3, ``<|im_end|>`` for ChatML),
  so the model learns to stop. Prompt tokens are masked unless ``train_on_prompt``.
  Without a chat template the prompt is used verbatim and the response gets ``eos_token``.
* text rows (GA / NPO forget corpus): the raw text + EOS, every token a target; ``packing``
  concatenates all texts and cuts blocks of ``max_length`` tokens (LLaMA-Factory's ``pt`` stage, which
  RWKU's GA / NPO use).

Over-long prompt/response rows keep ``max_length`` tokens, split between prompt and response in
proportion to their lengths (as LLaMA-Factory); the prompt loses its *start* so the generation
header survives.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

import torch

from RS import data as rs_data
from RS.config import FORMATS, RETAIN_FORMATS
from RS.losses import UNLEARN_LOSSES, LossSpec
from verl.utils.prompt_formats import PromptFormatter, encode_plain_text


@dataclass
class EncodeSpec:
    max_length: int = 512
    apply_chat_template: bool = True
    system_prompt: Optional[str] = None
    train_on_prompt: bool = False
    packing: bool = False


@dataclass
class TokenizedStream:
    ids: list[list[int]] = field(default_factory=list)
    """Token ids per row (unpadded)."""
    loss_mask: list[list[int]] = field(default_factory=list)
    """1 where the token is a training target (same lengths as ``ids``)."""
    truncated: int = 0
    """Rows cut to ``max_length``."""

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, ids: list[int], mask: list[int]) -> None:
        self.ids.append(ids)
        self.loss_mask.append(mask)


def _chat(tokenizer, spec: EncodeSpec) -> bool:
    return spec.apply_chat_template and bool(getattr(tokenizer, "chat_template", None))


def render_prompt_response(tokenizer, prompt: str, response: str, spec: EncodeSpec) -> tuple[str, str]:
    """(prompt text, response text) exactly as the model sees them at training time."""
    eos = tokenizer.eos_token or ""
    if not _chat(tokenizer, spec):
        return (f"{spec.system_prompt}\n{prompt}" if spec.system_prompt else prompt), response + eos
    messages = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
    messages.append({"role": "user", "content": prompt})
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    tail = full[len(prompt_text) :] if full.startswith(prompt_text) else ""
    if response.strip() not in tail:  # a template that rewrites earlier turns: fall back to response + EOS
        return prompt_text, response + eos
    start = tail.index(response.strip()) + len(response.strip())
    if eos and eos in tail[start:]:  # stop right after the end-of-turn token (ChatML adds a newline after it)
        tail = tail[: start + tail[start:].index(eos) + len(eos)]
    return prompt_text, tail


def encode_prompt_response(tokenizer, prompt: str, response: str, spec: EncodeSpec) -> tuple[list, list, bool]:
    """(ids, loss mask, truncated) of one prompt/response row."""
    return encode_rendered(tokenizer, *render_prompt_response(tokenizer, prompt, response, spec), spec)


def encode_rendered(tokenizer, prompt_text: str, response_text: str, spec: EncodeSpec) -> tuple[list, list, bool]:
    """(ids, loss mask, truncated) of a prompt and response already rendered by ``render_prompt_response``."""
    if _chat(tokenizer, spec):  # the chat template already wrote any BOS the model wants
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = encode_plain_text(tokenizer, prompt_text)
    response_ids = tokenizer(response_text, add_special_tokens=False)["input_ids"]
    total, limit = len(prompt_ids) + len(response_ids), spec.max_length
    truncated = total > limit
    if truncated:
        keep_response = max(1, min(len(response_ids), int(limit * len(response_ids) / total)))
        keep_prompt = limit - keep_response
        response_ids = response_ids[:keep_response]
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :] if keep_prompt > 0 else []
    mask = [1 if spec.train_on_prompt else 0] * len(prompt_ids) + [1] * len(response_ids)
    return prompt_ids + response_ids, mask, truncated


def encode_texts(tokenizer, texts: list[str], spec: EncodeSpec) -> TokenizedStream:
    """BOS + raw text + EOS per text, every token a target; packed into ``max_length`` blocks when ``spec.packing``."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    sequences = [encode_plain_text(tokenizer, text) + eos for text in texts]
    stream = TokenizedStream()
    if spec.packing:
        flat = [token for seq in sequences for token in seq]
        block = spec.max_length
        full_blocks = len(flat) // block
        ends = [block * (i + 1) for i in range(full_blocks)] or [len(flat)]  # drop the remainder, as LLaMA-Factory
        start = 0
        for end in ends:
            stream.append(flat[start:end], [1] * (end - start))
            start = end
        return stream
    for seq in sequences:
        if len(seq) > spec.max_length:
            stream.truncated += 1
            seq = seq[: spec.max_length]
        stream.append(seq, [1] * len(seq))
    return stream


def encode_rows(tokenizer, rows: list[dict], spec: EncodeSpec, response_key: str = "response") -> TokenizedStream:
    stream = TokenizedStream()
    for row in rows:
        ids, mask, truncated = encode_prompt_response(tokenizer, row["prompt"], row[response_key], spec)
        stream.append(ids, mask)
        stream.truncated += int(truncated)
    return stream


def encode_refusal_starts(
    tokenizer, retain_rows: list[dict], forget_rows: list[dict], spec: EncodeSpec, data_cfg: Any
) -> TokenizedStream:
    """Retain prompt ``j`` followed by forget refusal ``j mod len(forget_rows)``, cut after the refusal's
    first token, which alone is the loss token: a stream aligned with ``retain`` whose per-row log-prob is
    ``log p(the refusal starts | retain prompt)`` (after ``data.response_prefix``, which is not scored)."""
    stream = TokenizedStream()
    spec = replace(spec, train_on_prompt=False)  # the mask then tells where the response starts
    prefix = data_cfg.response_prefix
    for j, row in enumerate(retain_rows):
        refusal = forget_rows[j % len(forget_rows)]["response"]  # formatted rows: it starts with the prefix
        prompt_text, response_text = render_prompt_response(tokenizer, row["prompt"], refusal, spec)
        ids, mask, truncated = encode_rendered(tokenizer, prompt_text, response_text, spec)
        refusal_proper = refusal[len(prefix) :].strip()
        offset = response_text.find(refusal_proper) if refusal_proper else -1
        if offset < 0:
            raise ValueError(f"forget refusal {refusal!r} (for retain row {j}): its text is not in its own tokens")
        first = _first_token_past(tokenizer, ids, mask.index(1), offset)
        if first is None:
            raise ValueError(f"retain row {j}: max_length={spec.max_length} cuts the refusal before it starts")
        stream.append(ids[: first + 1], [0] * first + [1])
        stream.truncated += int(truncated)
    return stream


def _first_token_past(tokenizer, ids: list[int], start: int, offset: int) -> Optional[int]:
    """Index of the first token from ``start`` on whose decoded text (from ``start``) exceeds ``offset`` chars."""
    for end in range(start + 1, len(ids) + 1):
        if len(tokenizer.decode(ids[start:end], clean_up_tokenization_spaces=False)) > offset:
            return end - 1
    return None


# ----------------------------------------------------------------------------- streams for a loss
def _read(files: list[str], fmt: str, data_cfg: Any, limit: int = -1, side: str = "forget") -> tuple[str, list[dict]]:
    """Rows of every file (the first ``limit`` of each when > 0) in one shape (sft, text or pair);
    ``fmt`` auto-detects from the first row; ``side`` picks the rows of a ReBO file (``rebo``)."""
    if not files:
        raise ValueError("no data files given")
    if fmt in ("auto", ""):
        fmt = rs_data.detect_format(rs_data.read_nonempty(files[0])[0])
    rows: list[dict] = []
    for path in files:
        if fmt in ("sft", "questions"):
            found = rs_data.read_sft_rows(
                path, data_cfg.prompt_key, data_cfg.response_key, data_cfg.input_key, data_cfg.subject_key
            )
        elif fmt == "text":
            found = rs_data.read_text_rows(path, data_cfg.text_key, data_cfg.subject_key)
        elif fmt == "boundary":
            found = rs_data.read_boundary_rows(path)
        elif fmt == "rebo":
            found = rs_data.read_rebo_rows(path, side)
        elif fmt == "pair":
            found = rs_data.read_pair_rows(
                path, data_cfg.prompt_key or "prompt", data_cfg.chosen_index, data_cfg.subject_key
            )
        else:
            known = ", ".join(dict.fromkeys(FORMATS + RETAIN_FORMATS))
            raise ValueError(f"unknown data format {fmt!r}; choose one of: {known}")
        rows += _first(found, limit)
    return ("sft" if fmt in ("boundary", "rebo") else fmt), rows  # boundary / ReBO files yield sft rows


def _first(rows: list, limit: int) -> list:
    return rows[:limit] if limit > 0 else rows


def _questions_rows(files: list[str], data_cfg: Any) -> list[dict]:
    """``questions`` format: rows whose response is ignored (or missing): prompt only."""
    rows = []
    for path in files:
        for i, row in enumerate(_first(rs_data.read_nonempty(path), data_cfg.max_samples)):
            key = data_cfg.prompt_key or "instruction"
            if key not in row:
                raise ValueError(f"{path} row {i}: missing question key {key!r} (has {sorted(row)})")
            rows.append({"prompt": row[key], "subject": row.get(data_cfg.subject_key, "")})
    return rows


def build_streams(tokenizer, data_cfg: Any, loss: LossSpec) -> dict[str, TokenizedStream]:
    """The streams ``loss`` reads, from ``data_cfg`` (an ``RS.config.DataConfig``)."""
    spec = EncodeSpec(
        data_cfg.max_length, data_cfg.apply_chat_template, data_cfg.system_prompt, data_cfg.train_on_prompt
    )
    files = [f.strip() for f in data_cfg.train_files.split(",") if f.strip()]
    mode = data_cfg.refusal_mode or loss.refusals or "target"
    uses_templates = data_cfg.format == "questions" or ("chosen" in loss.streams and loss.refusals)
    templates = rs_data.load_templates(data_cfg.refusals or None, mode) if uses_templates else []
    streams: dict[str, TokenizedStream] = {}
    if "chosen" in loss.streams:
        fmt, pairs = _read(files, data_cfg.format, data_cfg, data_cfg.max_samples)
        if fmt != "pair":
            raise ValueError(
                f"loss {loss.name!r} needs pair rows (prompt + chosen/rejected); {files[0]} has {fmt} rows"
            )
        if loss.refusals:
            pairs = rs_data.refusal_pairs(pairs, templates, mode, data_cfg.target)
        streams["chosen"] = encode_rows(tokenizer, pairs, spec, "chosen")
        streams["rejected"] = encode_rows(tokenizer, pairs, spec, "rejected")
    else:
        if data_cfg.format == "questions":
            fmt, rows = "sft", _questions_rows(files, data_cfg)
            rows = rs_data.refusal_rows_from_questions(rows, templates, mode, data_cfg.target)
        else:
            fmt, rows = _read(files, data_cfg.format, data_cfg, data_cfg.max_samples)
        if fmt == "sft":
            rows = _formatted(rows, data_cfg, files[0])
        streams["forget"] = _encode_any(tokenizer, fmt, rows, spec, data_cfg.packing, files[0])
        forget_fmt, forget_rows = fmt, rows
    retain_files = [f.strip() for f in data_cfg.retain_files.split(",") if f.strip()]
    if "retain" in loss.streams:
        if not retain_files:
            raise ValueError(f"loss {loss.name!r} needs a retain set: set data.retain_files")
        fmt, rows = _read(retain_files, data_cfg.retain_format, data_cfg, side="retain")
        if fmt == "sft":
            rows = _formatted(rows, data_cfg, retain_files[0])
        streams["retain"] = _encode_any(tokenizer, fmt, rows, spec, data_cfg.packing, retain_files[0])
        if "retain_refusal" in loss.streams:
            if forget_fmt != "sft" or fmt != "sft":
                raise ValueError(
                    f"loss {loss.name!r} pairs retain questions with the forget set's refusals: it needs "
                    f"prompt/response rows on both sides; got {forget_fmt} forget rows, {fmt} retain rows"
                )
            streams["retain_refusal"] = encode_refusal_starts(tokenizer, rows, forget_rows, spec, data_cfg)
    elif retain_files:
        with_retain = ", ".join(n for n in UNLEARN_LOSSES.names() if "retain" in UNLEARN_LOSSES.get(n).streams)
        raise ValueError(f"data.retain_files is set but loss {loss.name!r} has no retain term (use {with_retain})")
    for name, stream in streams.items():
        if len(stream) == 0:
            raise ValueError(f"stream {name!r} is empty after tokenization (files: {data_cfg.train_files})")
    return streams


def _formatted(rows: list[dict], data_cfg: Any, where: str) -> list[dict]:
    """SFT rows with prompts in ``data.prompt_format`` and ``data.response_prefix`` before each response."""
    if data_cfg.prompt_format == "plain" and not data_cfg.response_prefix:
        return rows
    formatter = PromptFormatter(data_cfg.prompt_format, data_cfg.icl_file)
    return [
        {
            **row,
            "prompt": formatter(row["prompt"], row, f"{where} row {i}"),
            "response": data_cfg.response_prefix + row["response"],
        }
        for i, row in enumerate(rows)
    ]


def _encode_any(tokenizer, fmt: str, rows: list[dict], spec: EncodeSpec, packing: bool, where: str):
    if fmt == "text":
        spec = EncodeSpec(spec.max_length, spec.apply_chat_template, spec.system_prompt, spec.train_on_prompt, packing)
        return encode_texts(tokenizer, [r["text"] for r in rows], spec)
    if fmt == "sft":
        return encode_rows(tokenizer, rows, spec)
    raise ValueError(f"{where}: {fmt} rows cannot feed this stream (expected sft or text rows)")


# ----------------------------------------------------------------------------- collation
def collate(stream: TokenizedStream, indices: list[int], pad_token_id: int, name: str) -> dict[str, torch.Tensor]:
    """Left-padded ``{name}_input_ids``, ``{name}_attention_mask``, ``{name}_loss_mask``: (bs, max_len).

    Left padding puts every row's last token in the last column, so the loss tokens of prompt/response
    rows (the response) share the trailing columns and ``RS.worker.sequence_logps`` runs the LM head over
    those columns only; position ids come from the attention mask. A row's first token is never a
    loss token (nothing predicts it), so ``loss_mask[:, 1:]`` holds exactly the scored tokens.
    """
    length = max(len(stream.ids[i]) for i in indices)
    ids = torch.full((len(indices), length), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(indices), length), dtype=torch.long)
    loss_mask = torch.zeros((len(indices), length), dtype=torch.long)
    for row, i in enumerate(indices):
        n = len(stream.ids[i])
        ids[row, length - n :] = torch.tensor(stream.ids[i], dtype=torch.long)
        attention[row, length - n :] = 1
        loss_mask[row, length - n + 1 :] = torch.tensor(stream.loss_mask[i][1:], dtype=torch.long)
    return {f"{name}_input_ids": ids, f"{name}_attention_mask": attention, f"{name}_loss_mask": loss_mask}
