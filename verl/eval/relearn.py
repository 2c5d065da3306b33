"""The relearning attack's data and its few optimizer steps (used by :mod:`verl.eval.attacks`).

Corpus (:func:`relearn_blocks`): documents in file order are cut into sentences (after ``.``, ``!`` or ``?``
followed by whitespace, and at line breaks); every sentence that mentions a *banned* string - a held-out
probe's gold answer, and for the benign corpus also the target's name - as a whole word, case-insensitively,
is dropped. What is left of each document is joined with single spaces, encoded without special tokens,
the documents are concatenated with the eos token between them, and the stream is cut into blocks of
``block_tokens`` tokens; only as many documents are read as the steps need (the corpus *slice*), and a
shorter stream is reused from its start.

Training (:func:`fine_tune`): ``steps`` AdamW steps (constant ``lr``, no weight decay, no warm-up, no
gradient clipping) on batches of ``batch_size`` consecutive blocks, causal-LM loss (mean token
cross-entropy, HF ``labels``, padding ignored), in the model's own dtype on its own device. No sampling and
no dropout (the model is in train mode, but HF causal LMs here have dropout 0), so it is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Optional

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")


def banned_pattern(banned: Iterable[str]) -> Optional[re.Pattern[str]]:
    """A case-insensitive whole-word pattern for any of ``banned`` (longest first); None when empty."""
    words = sorted({b.strip() for b in banned if b.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)


def filter_sentences(text: str, pattern: Optional[re.Pattern[str]]) -> tuple[str, int]:
    """(the sentences of ``text`` that ``pattern`` does not match, joined by spaces; how many were dropped)."""
    sentences = [s.strip() for s in SENTENCE_BREAK.split(text) if s and s.strip()]
    kept = [s for s in sentences if pattern is None or not pattern.search(s)]
    return " ".join(kept), len(sentences) - len(kept)


def relearn_blocks(
    tokenizer, texts: Sequence[str], banned: Iterable[str], n_blocks: int, block_tokens: int
) -> tuple[list[list[int]], dict]:
    """``n_blocks`` token blocks (lists of ids, ``block_tokens`` long except possibly the stream's last)
    from ``texts`` with sentences mentioning ``banned`` removed (module docstring), and statistics
    ``{documents, sentences_dropped, tokens}`` of the slice read. ``ValueError`` if nothing is left."""
    if n_blocks < 1 or block_tokens < 2:
        raise ValueError(
            f"relearn_blocks: n_blocks must be >= 1 and block_tokens >= 2, got {n_blocks}, {block_tokens}"
        )
    pattern = banned_pattern(banned)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    documents = dropped = 0
    for text in texts:
        if len(stream) >= n_blocks * block_tokens:
            break
        kept, removed = filter_sentences(text, pattern)
        dropped += removed
        documents += 1
        if kept:
            stream += tokenizer(kept, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
    if len(stream) < 2:
        raise ValueError(
            f"relearning corpus is empty after removing sentences that mention {sorted(set(banned))!r:.200} "
            f"({documents} documents read)"
        )
    blocks = [stream[start : start + block_tokens] for start in range(0, len(stream), block_tokens)]
    blocks = [b for b in blocks if len(b) >= 2]
    chosen = [blocks[i % len(blocks)] for i in range(n_blocks)]
    return chosen, {"documents": documents, "sentences_dropped": dropped, "tokens": len(stream)}


def fine_tune(
    model, blocks: Sequence[Sequence[int]], steps: int, lr: float, batch_size: int, pad_id: int
) -> list[float]:
    """``steps`` AdamW steps on ``blocks`` taken ``batch_size`` at a time in order (cycling); returns each
    step's loss. Changes ``model`` in place (callers work inside ``HFGenerator.editable_weights``)."""
    import torch

    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"fine_tune: steps and batch_size must be >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    parameters = list(model.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    device = next(iter(parameters)).device
    losses = []
    model.train()
    with torch.enable_grad():
        for step in range(steps):
            batch = [blocks[(step * batch_size + row) % len(blocks)] for row in range(batch_size)]
            width = max(len(b) for b in batch)
            input_ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
            for row, block in enumerate(batch):
                input_ids[row, : len(block)] = torch.tensor(list(block), dtype=torch.long)
                attention_mask[row, : len(block)] = 1
            labels = input_ids.masked_fill(attention_mask == 0, -100)
            output = model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), labels=labels.to(device)
            )
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(output.loss.detach()))
    model.eval()
    return losses
