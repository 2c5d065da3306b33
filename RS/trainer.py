"""UnlearnTrainer: the driver loop of RS and the offline baselines on ``UnlearnWorker`` groups.

One run = tokenize the streams the loss reads -> start the worker group -> (losses with a reference:
score every reference row once, then free the reference model) -> ``epochs`` passes of shuffled
batches of ``trainer.batch_size`` rows, one optimizer step each -> after each epoch export
``{run_dir}/epoch_{k}`` as a plain HF folder (LoRA merged) that ReBO loads as actor and reference.

Steps per epoch = ceil(rows / batch_size) as in HF Trainer (RS on 300 rows, batch 8: 38). The last
batch of an epoch is cut to a multiple of the worker count (a row is never trained twice in a step).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import torch

from RS.config import RSConfig, worker_config
from RS.dataset import TokenizedStream, build_streams, collate
from RS.losses import get_loss
from verl.protocol import DataProto
from verl.utils.config import to_dict
from verl.utils.fileio import write_json_atomic
from verl.utils.tracking import Tracker, reduce_metrics


def build_worker_group(config: RSConfig):
    """An initialised ``UnlearnWorker`` group on Ray (``n_workers`` FSDP ranks) or in this process,
    and the function that shuts it down."""
    from RS.worker import UnlearnWorker
    from verl.single_controller import ClassWithInitArgs
    from verl.single_controller.launch import launch_initialised_worker_groups

    t = config.trainer
    cls = ClassWithInitArgs(UnlearnWorker, worker_config(config), config.loss.name, dict(config.loss.params))
    groups, shutdown = launch_initialised_worker_groups({"actor": cls}, t)
    return groups["actor"], shutdown


def epoch_batches(n_rows: int, batch_size: int, world: int, seed: int, epoch: int, shuffle: bool) -> list:
    """Row indices of each optimizer step of ``epoch`` (0-based); the last batch cut to a multiple of ``world``."""
    order = np.random.default_rng([seed, epoch]).permutation(n_rows) if shuffle else np.arange(n_rows)
    batches = [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]
    batches[-1] = batches[-1][: len(batches[-1]) - len(batches[-1]) % world]
    return [b.tolist() for b in batches if len(b)]


class UnlearnTrainer:
    def __init__(self, config: RSConfig, tokenizer=None, worker_group=None):
        from verl.workers import fsdp_utils

        self.config = config
        self.loss = get_loss(config.loss.name)
        model_cfg = config.model
        self.tokenizer = tokenizer or fsdp_utils.load_tokenizer(model_cfg.tokenizer_path or model_cfg.model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.streams: dict[str, TokenizedStream] = build_streams(self.tokenizer, config.data, self.loss)
        self.main_stream = "chosen" if "chosen" in self.streams else "forget"
        self.n_rows = len(self.streams[self.main_stream])
        self.world = config.world_size()
        t = config.trainer
        self.steps_per_epoch = len(epoch_batches(self.n_rows, t.batch_size, self.world, t.seed, 0, False))
        total = self.steps_per_epoch * t.epochs
        self.total_steps = min(total, t.max_steps) if t.max_steps > 0 else total
        config.optim.training_steps = self.total_steps
        if t.num_threads <= 0:
            t.num_threads = max(1, round(((os.cpu_count() or 2) - 0.5) / (t.n_gpus_per_node or t.n_workers)))
        self.ref_logps: dict[str, np.ndarray] = {}
        self.worker_group = worker_group
        self._shutdown = None
        self.global_step = 0

    # ------------------------------------------------------------------ batches
    def _retain_indices(self, indices: list[int], epoch: int, step: int) -> list[int]:
        n_retain = len(self.streams["retain"])
        order = np.random.default_rng([self.config.trainer.seed, epoch, 1]).permutation(n_retain)
        start = step * self.config.trainer.batch_size + epoch * self.n_rows
        return [int(order[(start + j) % n_retain]) for j in range(len(indices))]

    def make_batch(self, indices: list[int], epoch: int = 0, step: int = 0) -> DataProto:
        """The step's rows of every stream the loss reads (plus cached reference log-probs)."""
        tensors: dict[str, torch.Tensor] = {}
        retain_rows = self._retain_indices(indices, epoch, step) if "retain" in self.streams else []
        for name in self.loss.streams:
            rows = retain_rows if name in ("retain", "retain_refusal") else indices  # aligned with retain
            tensors.update(collate(self.streams[name], rows, self.pad_id, name))
            if name in self.ref_logps:
                tensors[f"{name}_ref_logps"] = torch.from_numpy(self.ref_logps[name][rows]).float()
        return DataProto.from_dict(tensors)

    def stream_logps(self, stream: str, use_ref: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(summed loss-token log-probs, loss-token counts) of every row of ``stream``, under actor or reference."""
        rows = len(self.streams[stream])
        order = np.argsort([len(ids) for ids in self.streams[stream].ids], kind="stable")  # less padding
        chunk = self.config.trainer.micro_batch_size_for_logps * self.world
        logps, ntokens = np.zeros(rows, np.float64), np.zeros(rows, np.float64)
        for start in range(0, rows, chunk):
            idx = order[start : start + chunk].tolist()
            data = DataProto.from_dict(collate(self.streams[stream], idx, self.pad_id, stream))
            data.meta_info = {"streams": [stream], "use_ref": use_ref}
            out = self.worker_group.compute_sequence_logps(data)
            logps[idx] = out.batch[f"{stream}_ref_logps" if use_ref else f"{stream}_logps"].double().numpy()
            ntokens[idx] = out.batch[f"{stream}_ntokens"].double().numpy()
        return logps, ntokens

    def stream_nll(self, stream: str) -> float:
        """Token-mean NLL of ``stream`` under the current actor (e.g. forget NLL for GA / NPO)."""
        logps, ntokens = self.stream_logps(stream)
        return float(-logps.sum() / max(ntokens.sum(), 1.0))

    # ------------------------------------------------------------------ loop
    def init_workers(self) -> None:
        if self.worker_group is None:
            self.worker_group, self._shutdown = build_worker_group(self.config)
        if self.loss.needs_ref and not self.ref_logps:
            for stream in self.loss.ref_streams:
                self.ref_logps[stream] = self.stream_logps(stream, use_ref=True)[0]
            self.worker_group.release_reference()

    def train_step(self, indices: list[int], epoch: int = 0, step: int = 0) -> dict[str, float]:
        """One optimizer step on these rows; returns the batch metrics (means over ranks)."""
        per_rank = self.worker_group.update_unlearn(self.make_batch(indices, epoch, step))
        metrics = reduce_metrics({key: [m[key] for m in per_rank] for key in per_rank[0]})
        self.global_step += 1
        return metrics

    def fit(self) -> dict[str, Any]:
        """Train all epochs; returns ``{"exports": [...], "metrics": last step's metrics, "steps": n}``."""
        from tqdm import tqdm

        cfg, t = self.config, self.config.trainer
        os.makedirs(t.run_dir, exist_ok=True)
        write_json_atomic(os.path.join(t.run_dir, "rs_config.json"), to_dict(cfg), indent=2, default=str)
        self._report_data()
        self.init_workers()
        tracker = Tracker(t.logger, t.run_dir, t.project_name, t.experiment_name, to_dict(cfg))
        exports, metrics = [], {}
        bar = tqdm(total=self.total_steps, desc=f"{cfg.loss.name} {t.experiment_name}", disable=not t.progress)
        start = time.time()
        for epoch in range(t.epochs):
            batches = epoch_batches(self.n_rows, t.batch_size, self.world, t.seed, epoch, cfg.data.shuffle)
            for step, indices in enumerate(batches):
                if self.global_step >= self.total_steps:
                    break
                metrics = self.train_step(indices, epoch, step)
                metrics["train/epoch"] = epoch + (step + 1) / len(batches)
                tracker.log(metrics, self.global_step)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", lr=f"{metrics['lr']:.2e}")
            last = epoch == t.epochs - 1 or self.global_step >= self.total_steps
            if t.save_every_epoch or last:
                path = os.path.join(t.run_dir, f"epoch_{epoch + 1}")
                self.worker_group.export_hf(path)
                exports.append(path)
            if last:
                break
        bar.close()
        tracker.finish()
        summary = {"exports": exports, "metrics": metrics, "steps": self.global_step, "wall_s": time.time() - start}
        write_json_atomic(os.path.join(t.run_dir, "summary.json"), summary, indent=2, default=str)
        print(f"done: {self.global_step} steps in {summary['wall_s']:.0f} s; exported {', '.join(exports)}")
        return summary

    def close(self) -> None:
        """Stop Ray workers and release their resources (a no-op for in-process groups)."""
        shutdown, self._shutdown = self._shutdown, None
        self.worker_group = None
        if shutdown is not None:
            shutdown()

    def _report_data(self) -> None:
        parts = []
        for name, stream in self.streams.items():
            tokens = sum(sum(m) for m in stream.loss_mask)
            parts.append(f"{name}: {len(stream)} rows, {tokens} loss tokens, {stream.truncated} truncated")
        print(
            f"loss {self.loss.name}; " + "; ".join(parts) + f"; {self.steps_per_epoch} steps/epoch, "
            f"{self.total_steps} steps, {math.ceil(self.total_steps / max(self.steps_per_epoch, 1))} epoch(s)",
            flush=True,
        )
        dropped = (self.n_rows % self.config.trainer.batch_size) % self.world
        if dropped:
            print(
                f"warning: the last batch of each epoch drops {dropped} row(s) so that it divides by the "
                f"{self.world} workers (choose batch_size / workers so that rows % batch_size divides by workers)",
                flush=True,
            )
