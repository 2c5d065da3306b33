"""The single controller's training loop (ReBO / PPO / GRPO).

One step: generate -> reward (in a background thread) || old and ref log-probs (workers) ->
advantages (driver) -> critic and actor updates (workers) -> validation, checkpoint, metrics.
"""

from __future__ import annotations

import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm

from verl.protocol import DataProto
from verl.trainer import core_algos
from verl.trainer.checkpoint import CheckpointManager
from verl.trainer.config import PPOConfig
from verl.utils.config import to_dict
from verl.utils.dataset import PromptDataset, PromptSampler
from verl.utils.fileio import write_json_atomic
from verl.utils.flops import flop_shape, forward_flops
from verl.utils.memory_plan_report import find_model_config
from verl.utils.seqlen_balancing import dp_balance_order
from verl.utils.torch_functional import masked_mean
from verl.utils.tracking import Tracker, reduce_metrics
from verl.workers.reward import RewardManager
from verl.workers.rollout.texts import generate_texts


@contextmanager
def timer(name: str, timings: dict[str, float]):
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def worker_death(error: BaseException):
    """``error`` if it is the Ray backend's ``WorkerDiedError`` (a worker process died), else None.

    Needs no Ray import: such an error can only exist once ``verl.single_controller.ray`` is loaded.
    """
    backend = sys.modules.get("verl.single_controller.ray")
    return error if backend is not None and isinstance(error, backend.WorkerDiedError) else None


def model_flop_shape(model_path: str):
    """The actor's :class:`FlopShape` for the ``perf/forward_flops`` metric, or None when its config.json
    cannot be read offline (a hub id not in the cache): the metric is then left out."""
    try:
        return flop_shape(find_model_config(model_path))
    except (OSError, ValueError) as error:
        print(f"note: no perf/forward_flops metric ({error})", file=sys.stderr)
        return None


def merge_rank_metrics(per_rank: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for metrics in per_rank:
        for key, values in metrics.items():
            merged.setdefault(key, []).extend(values)
    return merged


class RayPPOTrainer:
    """Drives the worker groups. ``evaluator`` (optional) is called as ``evaluator(generate_fn, step)``."""

    def __init__(
        self,
        config: PPOConfig,
        tokenizer,
        train_dataset: PromptDataset | None,
        val_dataset: PromptDataset | None,
        reward_fn: RewardManager,
        worker_groups: dict,
        evaluator=None,
        best_criterion=None,
    ):
        self.config = config
        self.tokenizer = tokenizer
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.reward_fn = reward_fn
        self.actor_wg = worker_groups["actor_rollout_ref"]
        self.critic_wg = worker_groups.get("critic")
        self.evaluator = evaluator
        self.best_criterion = best_criterion
        self.use_critic = config.algorithm.adv_estimator == "gae"
        self.use_ref = not config.algorithm.disable_kl
        algo = config.algorithm
        self.kl_ctrl = core_algos.get_kl_controller(algo.kl_type, algo.kl_coef, algo.kl_target, algo.kl_horizon)
        self.checkpoints = CheckpointManager(config.trainer.run_dir, config.trainer.save_limit)
        self.sampler = None
        if train_dataset is not None:
            self.sampler = PromptSampler(
                len(train_dataset), config.data.rollout_batch_size, config.data.shuffle, config.data.seed
            )
        self.global_step = 0
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._flop_shape = model_flop_shape(config.worker.actor.model.model_path)

    # ------------------------------------------------------------------ schedule
    def total_steps(self) -> int:
        per_epoch = self.sampler.batches_per_epoch() if self.sampler else 0
        total = per_epoch * self.config.trainer.total_epochs
        return min(total, self.config.trainer.max_steps) if self.config.trainer.max_steps > 0 else total

    # ------------------------------------------------------------------ batches
    def _prompt_batch(self, dataset: PromptDataset, indices: list[int], meta: dict) -> DataProto:
        rows = dataset.collate(indices)
        non_tensors = {
            "ground_truth": rows["ground_truth"],
            "raw_prompt": rows["raw_prompt"],
            "uid": [str(uuid.uuid4()) for _ in indices],
        }
        tensors = {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}
        return DataProto.from_dict(tensors, non_tensors, meta)

    def _sampling_meta(self) -> dict:
        rollout = self.config.worker.rollout
        return {"temperature": rollout.temperature, "n": rollout.n}

    # ------------------------------------------------------------------ one step
    def train_step(self, indices: list[int]) -> dict[str, float]:
        cfg = self.config
        timings: dict[str, float] = {}
        metrics: dict = {}
        with timer("step", timings):
            prompts = self._prompt_batch(self.train_dataset, indices, self._sampling_meta())
            with timer("gen", timings):
                batch = self.actor_wg.generate_sequences(prompts)
            batch.meta_info["temperature"] = cfg.worker.rollout.temperature
            if cfg.trainer.balance_batch and self.actor_wg.world_size > 1:
                lengths = batch.batch["attention_mask"].sum(-1).tolist()
                batch.reorder(dp_balance_order(lengths, self.actor_wg.world_size))
            with timer("reward", timings):
                reward_view = batch.select(["responses", "response_mask"], ["ground_truth"])
                reward_future = self._executor.submit(self.reward_fn.compute_reward, reward_view)
            with timer("old_log_prob", timings):
                mode = self.old_log_prob_mode()
                if mode == "recompute":
                    batch.union(self.actor_wg.compute_log_prob(batch))
                elif mode == "rollout":
                    batch.batch["old_log_probs"] = batch.batch["rollout_log_probs"]
            if self.use_ref:
                with timer("ref", timings):
                    batch.union(self.actor_wg.compute_ref_log_prob(batch))
            if self.use_critic:
                with timer("values", timings):
                    batch.union(self.critic_wg.compute_values(batch))
            with timer("reward_wait", timings):
                scores, reward_metrics = reward_future.result()
            with timer("adv", timings):
                self._compute_advantage(batch, scores, metrics)
            if self.use_critic:
                with timer("update_critic", timings):
                    metrics.update(merge_rank_metrics(self.critic_wg.update_critic(batch)))
            if self.global_step >= cfg.trainer.critic_warmup:
                with timer("update_actor", timings):
                    metrics.update(merge_rank_metrics(self.actor_wg.update_actor(batch)))
        metrics.update({f"reward/{k}": v for k, v in reward_metrics.items()})
        metrics.update(self._data_metrics(batch, timings))
        return reduce_metrics(metrics)

    def old_log_prob_mode(self) -> str:
        """recompute, rollout, or on_policy (the update uses its own detached log-probs: exact, no extra pass)."""
        actor = self.config.worker.actor
        if actor.old_log_probs != "auto":
            return actor.old_log_probs
        on_policy = actor.ppo_epochs == 1 and self.config.data.rollout_batch_size == actor.global_batch_size
        return "on_policy" if on_policy else "recompute"

    def _current_log_probs(self, batch: DataProto) -> torch.Tensor:
        """Old log-probs if present, else the policy's current ones (for the KL-in-reward and metrics)."""
        if "old_log_probs" in batch.batch.keys():
            return batch.batch["old_log_probs"]
        return batch.batch["rollout_log_probs"]

    def _compute_advantage(self, batch: DataProto, scores: torch.Tensor, metrics: dict) -> None:
        algo = self.config.algorithm
        mask = batch.batch["response_mask"].float()
        batch.batch["token_level_scores"] = scores
        if self.use_ref and not algo.use_kl_loss:
            rewards, kl_metrics = core_algos.apply_kl_penalty(
                scores,
                self._current_log_probs(batch),
                batch.batch["ref_log_probs"],
                mask,
                self.kl_ctrl,
                algo.kl_penalty,
            )
            metrics.update(kl_metrics)
        else:
            rewards = scores
        batch.batch["token_level_rewards"] = rewards
        advantages, returns = core_algos.compute_advantage(
            algo.adv_estimator,
            token_level_rewards=rewards,
            response_mask=mask,
            index=batch.non_tensor_batch["uid"],
            values=batch.batch["values"] if "values" in batch.batch.keys() else None,
            gamma=algo.gamma,
            lam=algo.lam,
        )
        batch.batch["advantages"], batch.batch["returns"] = advantages, returns
        if self.use_ref:
            kl = core_algos.compute_kl(self._current_log_probs(batch), batch.batch["ref_log_probs"], "kl")
            metrics["actor/ref_kl"] = masked_mean(kl, mask).item()

    def _data_metrics(self, batch: DataProto, timings: dict[str, float]) -> dict[str, float]:
        mask = batch.batch["response_mask"].float()
        lengths = mask.sum(-1)
        seq_lens = batch.batch["attention_mask"].sum(-1)
        tokens = float(seq_lens.sum())
        out = {f"timing/{k}": v for k, v in timings.items()}
        if self._flop_shape is not None:  # one forward over the step's batch (verl/utils/flops.py)
            out["perf/forward_flops"] = forward_flops(self._flop_shape, seq_lens.tolist(), int(mask.sum()))
        out.update(
            {
                "response_length/mean": lengths.mean().item(),
                "response_length/max": lengths.max().item(),
                "response_length/clip_ratio": (lengths == mask.shape[1]).float().mean().item(),
                "advantages/mean": masked_mean(batch.batch["advantages"], mask).item(),
                "throughput/tokens_per_s": tokens / max(timings.get("step", 1e-9), 1e-9),
                "throughput/gen_tokens_per_s": float(mask.sum()) / max(timings.get("gen", 1e-9), 1e-9),
            }
        )
        return out

    # ------------------------------------------------------------------ validation
    def generate_texts(self, prompts: list[str], sampling) -> list[str]:
        """Generate with the engine's rollout for already-templated prompt strings (evaluator hook).

        ``sampling`` is a ``verl.eval.SamplingParams`` (n, temperature, top_p, top_k, stop, max_new_tokens);
        returns ``len(prompts) * n`` texts, samples of one prompt adjacent.
        """
        meta = {
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k is not None else -1,
            "stop": list(sampling.stop or []),
            "max_new_tokens": sampling.max_new_tokens,
        }
        return generate_texts(self.actor_wg, self.tokenizer, prompts, meta)

    def validate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.val_dataset is not None:
            limit = self.config.data.max_val_samples
            count = len(self.val_dataset) if limit < 0 else min(limit, len(self.val_dataset))
            meta = {**self._sampling_meta(), **self.config.worker.rollout.val_override_config}
            size = self.config.data.val_batch_size if self.config.data.val_batch_size > 0 else count
            outputs = []
            for start in range(0, count, size):
                indices = list(range(start, min(start + size, count)))
                outputs.append(self.actor_wg.generate_sequences(self._prompt_batch(self.val_dataset, indices, meta)))
            batch = DataProto.concat(outputs)
            _, reward_metrics = self.reward_fn.compute_reward(batch)
            metrics.update({f"val/reward/{k}": float(np.mean(v)) for k, v in reward_metrics.items()})
            self._log_generations(batch, reward_metrics)
        if self.evaluator is not None:
            from verl.eval.generator import CallableGenerator

            generator = CallableGenerator(self.tokenizer, self.generate_texts)
            metrics.update(self.evaluator(generator, self.global_step))
        return metrics

    def _log_generations(self, batch: DataProto, reward_metrics: dict) -> None:
        count = min(self.config.trainer.val_generations_to_log, len(batch))
        rows = []
        for i in range(count):
            mask = batch.batch["response_mask"][i].bool()
            rows.append(
                {
                    "prompt": batch.non_tensor_batch["raw_prompt"][i],
                    "response": self.tokenizer.decode(batch.batch["responses"][i][mask], skip_special_tokens=True),
                    "ground_truth": batch.non_tensor_batch["ground_truth"][i],
                    "score": reward_metrics["overall"][i],
                }
            )
        self.tracker.log_text("val_generations", rows, self.global_step)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, metrics: dict[str, float] | None = None) -> None:
        tmp = self.checkpoints.begin(self.global_step)
        self.actor_wg.save_checkpoint(str(tmp / "actor"))
        if self.critic_wg is not None:
            self.critic_wg.save_checkpoint(str(tmp / "critic"))
        state = {"global_step": self.global_step, "sampler": self.sampler.state_dict() if self.sampler else None}
        state["kl_coef"] = self.kl_ctrl.value
        self.checkpoints.commit(self.global_step, tmp, state)

    def load_checkpoint(self) -> bool:
        """Resume from the newest complete checkpoint (after cleaning what a killed save left behind)."""
        self.checkpoints.clean_stale()
        if not self.config.trainer.resume:
            return False
        path = self.checkpoints.latest()
        if path is None:
            return False
        import json

        with open(path / "trainer_state.json") as f:
            state = json.load(f)
        self.actor_wg.load_checkpoint(str(path / "actor"))
        if self.critic_wg is not None:
            self.critic_wg.load_checkpoint(str(path / "critic"))
        self.global_step = int(state["global_step"])
        if self.sampler is not None and state.get("sampler"):
            self.sampler.load_state_dict(state["sampler"])
        self.kl_ctrl.value = float(state.get("kl_coef", self.kl_ctrl.value))
        print(f"resumed from {path} (step {self.global_step})", flush=True)
        return True

    def _maybe_mark_best(self, metrics: dict[str, float]) -> bool:
        """If the criterion prefers ``metrics``: save this step (unless saved already), then mark it best.

        Nothing is marked with ``save_freq=-2`` (no checkpoints): a best marker names a complete checkpoint.
        """
        if self.best_criterion is None or self.config.trainer.save_freq == -2:
            return False
        if not self.best_criterion.is_better(metrics, self.checkpoints.tracker().get("best_metrics")):
            return False
        if self.checkpoints.tracker().get("latest_step") != self.global_step:
            self.save_checkpoint()
        self.checkpoints.mark_best(self.global_step, metrics)
        return True

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, float]:
        """Train (and validate, save) to the last step; a dead worker ends it with a one-line error
        naming the worker and the step in progress (``WorkerDiedError`` with ``step`` set)."""
        self._step_in_progress, self._progress = 0, None
        try:
            return self._fit()
        except Exception as error:
            death = worker_death(error)
            if death is not None and death.step is None:
                death.step = self._step_in_progress
            raise
        finally:
            if self._progress is not None:
                self._progress.close()  # end the bar's line, so an error message starts a line of its own

    def _fit(self) -> dict[str, float]:
        cfg = self.config.trainer
        self.tracker = Tracker(cfg.logger, cfg.run_dir, cfg.project_name, cfg.experiment_name, to_dict(self.config))
        write_json_atomic(f"{cfg.run_dir}/config.json", to_dict(self.config), indent=2, default=str)
        self.load_checkpoint()
        last_val: dict[str, float] = {}
        if cfg.val_only or (cfg.val_before_train and self.global_step == 0):
            last_val = self.validate()
            self.tracker.log(last_val, self.global_step)
            if cfg.val_only:
                return last_val
        total = self.total_steps()
        progress = self._progress = tqdm(total=total, initial=self.global_step, desc="training", unit="step")
        while self.global_step < total:
            self._step_in_progress = self.global_step + 1
            metrics = self.train_step(self.sampler.next_batch())
            self.global_step += 1
            is_last = self.global_step == total
            if cfg.val_freq > 0 and (self.global_step % cfg.val_freq == 0 or is_last):
                last_val = self.validate()
                metrics.update(last_val)
                self._maybe_mark_best(last_val)
            if cfg.save_freq > 0 and self.global_step % cfg.save_freq == 0 or (is_last and cfg.save_freq != -2):
                if self.checkpoints.tracker().get("latest_step") != self.global_step:
                    self.save_checkpoint()
            self.tracker.log(metrics, self.global_step)
            progress.update(1)
        progress.close()
        if cfg.export_hf:
            self.actor_wg.export_hf(f"{cfg.run_dir}/final")
        self.tracker.finish()
        return last_val
