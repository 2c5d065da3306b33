"""Prompt datasets for RL: JSON / JSONL / parquet files or HF dataset ids, chat template, left padding.

A row needs ``prompt_key`` (a string, or a list of chat messages) and ``answer_key`` (the
``ground_truth`` the reward sees, e.g. RULE's ``["<reject>", refusal, target]``).
Batches come from ``PromptSampler``: a seeded permutation per epoch whose position is saved in
checkpoints, so a resumed run sees exactly the data order it would have seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verl.utils.prompt_formats import PromptFormatter

TRUNCATION = ("error", "left", "right")


def read_rows(source: str) -> list[dict[str, Any]]:
    """Rows of a .json (list or {"data": list}), .jsonl or .parquet file, or ``hub_id[@split]``."""
    path = Path(source)
    if path.suffix in (".json", ".jsonl", ".parquet") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {source}")
        if path.suffix == ".jsonl":
            with open(path) as f:
                rows = []
                for line_no, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise ValueError(f"{source}:{line_no}: invalid JSON ({e})") from e
                return rows
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{source}: invalid JSON ({e})") from e
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{source}: expected a JSON list of rows")
        return data
    import datasets

    name, _, split = source.partition("@")
    return list(datasets.load_dataset(name, split=split or "train"))


@dataclass
class PromptDatasetSpec:
    prompt_key: str = "prompt"
    answer_key: str = "solution"
    max_prompt_length: int = 512
    truncation: str = "error"
    apply_chat_template: bool = True
    system_prompt: str | None = None
    prompt_format: str = "plain"
    icl_file: str | None = None


class PromptDataset:
    """Tokenized prompts (unpadded id lists) plus their ground truths and raw text."""

    def __init__(self, files: str | list[str], tokenizer, spec: PromptDatasetSpec):
        if spec.truncation not in TRUNCATION:
            raise ValueError(f"data.truncation={spec.truncation!r}; choose one of: {', '.join(TRUNCATION)}")
        self.tokenizer = tokenizer
        self.spec = spec
        self.prompt_ids: list[list[int]] = []
        self.ground_truth: list[Any] = []
        self.raw_prompts: list[str] = []
        self.formatter = PromptFormatter(spec.prompt_format, spec.icl_file)
        for source in [files] if isinstance(files, str) else list(files):
            for index, row in enumerate(read_rows(source)):
                self._add(row, f"{source} row {index}")
        if not self.prompt_ids:
            raise ValueError(f"no rows in {files}")

    def _add(self, row: dict, where: str) -> None:
        spec = self.spec
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        for key in (spec.prompt_key, spec.answer_key):
            if key not in row:
                raise ValueError(f"{where}: missing key {key!r} (has {sorted(row)})")
        prompt = row[spec.prompt_key]
        if isinstance(prompt, str):
            prompt = self.formatter(prompt, row, where)
        text = self.render(prompt)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > spec.max_prompt_length:
            if spec.truncation == "error":
                raise ValueError(
                    f"{where}: prompt has {len(ids)} tokens > data.max_prompt_length={spec.max_prompt_length} "
                    "(raise it or set data.truncation=left|right)"
                )
            ids = ids[-spec.max_prompt_length :] if spec.truncation == "left" else ids[: spec.max_prompt_length]
        self.prompt_ids.append(ids)
        self.ground_truth.append(row[spec.answer_key])
        self.raw_prompts.append(prompt if isinstance(prompt, str) else json.dumps(prompt))

    def render(self, prompt: str | list[dict]) -> str:
        """The model's chat template over one user turn (or the given messages)."""
        if not self.spec.apply_chat_template:
            text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
            bos = self.tokenizer.bos_token if self.spec.prompt_format == "muse" else None
            return f"{bos}{text}" if bos and not text.startswith(bos) else text  # MUSE: BOS + text, as its evaluator
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.spec.system_prompt:
            messages = [{"role": "system", "content": self.spec.system_prompt}, *messages]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def collate(self, indices: list[int]) -> dict[str, Any]:
        """Left-padded ``input_ids``/``attention_mask`` (bs, max_len) plus non-tensor fields."""
        pad = self.tokenizer.pad_token_id
        rows = [self.prompt_ids[i] for i in indices]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row) :] = torch.tensor(row)
            attention_mask[i, width - len(row) :] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "ground_truth": [self.ground_truth[i] for i in indices],
            "raw_prompt": [self.raw_prompts[i] for i in indices],
            "index": list(indices),
        }


class PromptSampler:
    """Seeded batches of indices; ``state_dict`` / ``load_state_dict`` make the order resumable."""

    def __init__(self, size: int, batch_size: int, shuffle: bool = True, seed: int = 42, drop_last: bool = True):
        if batch_size > size and drop_last:
            raise ValueError(f"batch size {batch_size} is larger than the dataset ({size} rows)")
        self.size, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            size,
            batch_size,
            shuffle,
            seed,
            drop_last,
        )
        self.epoch = 0
        self.position = 0

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng(self.seed + self.epoch).permutation(self.size)

    def next_batch(self) -> list[int]:
        if self.position >= self.batches_per_epoch():
            self.epoch += 1
            self.position = 0
        start = self.position * self.batch_size
        self.position += 1
        return self._order()[start : start + self.batch_size].tolist()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
