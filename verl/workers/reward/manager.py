"""Turns rollouts into rewards: decode each response, score it, put the score on its last token.

The scoring function is a registered name (:data:`~verl.workers.reward.functions.REWARD_FUNCTIONS`) or a
plug-in ``path/to/file.py:fn`` loaded with importlib (EasyR1's convention, ENGINE.md section 7). A plug-in
file may define ``REWARD_TYPE = "sequential" | "batch"``, which overrides ``config.reward_type``.

The refusal detector (``config.refusal_detector``) is bound to every function that takes ``refusal_detector``
(all registered ones); a ``judge`` needs the judge built above this layer and passed in (the trainer does it,
:func:`verl.trainer.main.build_reward_detector`), and its verdicts for a batch are fetched in one call.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from verl.workers.reward.config import REWARD_TYPES, RewardConfig, split_reward_function
from verl.workers.reward.functions import REWARD_FUNCTIONS
from verl.workers.reward.refusal import REWARD_DEFAULT_DETECTOR, Detector, get_detector


def _load_plugin_module(path: str, spec_text: str):
    if not os.path.isfile(path):
        raise ValueError(f"reward function file not found: {path} (worker.reward.reward_function={spec_text!r})")
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    module_name = f"verl_reward_plugin_{os.path.splitext(os.path.basename(path))[0]}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses / pickling inside the file look the module up here
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(module_name, None)
        raise
    return module


def resolve_reward_function(spec_text: str, reward_type: str) -> tuple[Callable, str]:
    """``spec_text`` -> (function, reward type). Registered names keep ``reward_type``; a plug-in file's
    ``REWARD_TYPE`` constant overrides it. Errors name the file / function / value at fault."""
    path, function_name = split_reward_function(spec_text)
    if path is None:
        return REWARD_FUNCTIONS.get(function_name), reward_type  # KeyError listing the registered names
    module = _load_plugin_module(path, spec_text)
    function = getattr(module, function_name, None)
    if not callable(function):
        defined = sorted(
            name for name, value in vars(module).items() if inspect.isfunction(value) and not name.startswith("_")
        )
        raise ValueError(
            f"reward function file {path} has no function {function_name!r}; functions defined there: {defined}"
        )
    reward_type = getattr(module, "REWARD_TYPE", reward_type)
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"REWARD_TYPE={reward_type!r} in {path} is not allowed; choose one of: {list(REWARD_TYPES)}")
    return function, reward_type


def _check_kwargs(function: Callable, kwargs: dict, spec_text: str) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # builtins without a signature: let the call itself complain
        return
    try:
        signature.bind_partial(**kwargs)
    except TypeError as e:
        raise ValueError(
            f"reward function {spec_text!r} does not accept reward_function_kwargs {sorted(kwargs)}: {e}; "
            f"its signature is {signature}"
        ) from e


def _takes(function: Callable, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name for p in parameters)  # named explicitly: **kwargs plug-ins keep their old calls


class RewardManager:
    """Scores a rollout batch with one reward function.

    Args:
        config: :class:`RewardConfig` (function, kwargs, reward type, decoding, threads, refusal detector).
        tokenizer: anything with ``decode(ids: list[int], skip_special_tokens: bool) -> str``.
        refusal_detector: the detector for ``config.refusal_detector`` when it cannot be built here (``judge``:
            it holds a model); None = build it by name.
    """

    def __init__(self, config: RewardConfig, tokenizer: Any, refusal_detector: Detector | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self._injected = refusal_detector
        function, self.reward_type = resolve_reward_function(config.reward_function, config.reward_type)
        kwargs = dict(config.reward_function_kwargs or {})
        _check_kwargs(function, kwargs, config.reward_function)
        self.name = config.reward_function
        self.refusal_detector = self._detector(function)
        if self.refusal_detector is not None:
            kwargs["refusal_detector"] = self.refusal_detector
        self.reward_fn = functools.partial(function, **kwargs)

    def _detector(self, function: Callable) -> Detector | None:
        name = getattr(self.config, "refusal_detector", REWARD_DEFAULT_DETECTOR)
        if not _takes(function, "refusal_detector"):
            if name != REWARD_DEFAULT_DETECTOR or self._injected is not None:
                raise ValueError(
                    f"reward function {self.config.reward_function!r} takes no refusal_detector argument, so "
                    f"worker.reward.refusal_detector={name!r} cannot apply; add the argument or keep 'rule'"
                )
            return None
        if self._injected is not None:
            return self._injected
        if name == "judge":
            raise ValueError(
                "worker.reward.refusal_detector=judge: the judge model is loaded by the trainer "
                "(worker.reward.judge_model); pass RewardManager(..., refusal_detector=judge) when building it yourself"
            )
        return get_detector(name)

    # The bound function may come from a file loaded at run time; re-resolve it after unpickling (Ray).
    def __getstate__(self) -> dict:
        return {"config": self.config, "tokenizer": self.tokenizer, "refusal_detector": self._injected}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"], state["tokenizer"], state.get("refusal_detector"))

    def _decode(self, data) -> tuple[list[str], list[int]]:
        if data.batch is None:
            raise ValueError("reward: data.batch is empty; it needs 'responses' and 'response_mask'")
        for key in ("responses", "response_mask"):
            if key not in data.batch.keys():
                raise ValueError(f"reward: data.batch has no {key!r}; keys: {sorted(data.batch.keys())}")
        if "ground_truth" not in data.non_tensor_batch:
            raise ValueError(
                f"reward: data.non_tensor_batch has no 'ground_truth'; keys: {sorted(data.non_tensor_batch)}"
            )
        responses, mask = data.batch["responses"], data.batch["response_mask"]
        if responses.shape != mask.shape or responses.dim() != 2:
            raise ValueError(
                f"reward: responses {tuple(responses.shape)} and response_mask {tuple(mask.shape)} must both be (bs, R)"
            )
        lengths = mask.to(torch.long).sum(dim=-1).tolist()
        texts = []
        for i, length in enumerate(lengths):
            if not bool(mask[i, :length].all()):
                raise ValueError(f"reward: response_mask row {i} is not right-padded (a 0 before its last 1)")
            ids = responses[i, :length].tolist()
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=self.config.skip_special_tokens))
        return texts, lengths

    def _score(self, texts: list[str], lengths: list[int], ground_truths) -> list[dict]:
        if self.reward_type == "batch":
            inputs = [
                {"response": text, "response_length": length, "ground_truth": ground_truth}
                for text, length, ground_truth in zip(texts, lengths, ground_truths)
            ]
            scores = self.reward_fn(inputs)
            if not isinstance(scores, (list, tuple)) or len(scores) != len(inputs):
                got = f"{len(scores)} items" if isinstance(scores, (list, tuple)) else type(scores).__name__
                raise ValueError(
                    f"batch reward function {self.name!r} must return a list of {len(inputs)} dicts, got {got}"
                )
            return list(scores)

        def score_one(i: int) -> dict:
            try:
                return self.reward_fn(texts[i], ground_truths[i])
            except ValueError as e:
                raise ValueError(f"reward function {self.name!r} failed on sample {i}: {e}") from e

        if self.config.num_threads > 1:
            with ThreadPoolExecutor(self.config.num_threads) as pool:
                return list(pool.map(score_one, range(len(texts))))
        return [score_one(i) for i in range(len(texts))]

    def _collect(self, scores: list[dict]) -> dict[str, list[float]]:
        keys = None
        for i, score in enumerate(scores):
            if not isinstance(score, dict) or "overall" not in score:
                raise ValueError(
                    f"reward function {self.name!r} must return a dict with 'overall'; sample {i} gave {score!r}"
                )
            if keys is None:
                keys = list(score)
            elif set(score) != set(keys):
                raise ValueError(
                    f"reward function {self.name!r} returned keys {sorted(score)} for sample {i} but {sorted(keys)} "
                    "for sample 0; every sample needs the same keys"
                )
        metrics: dict[str, list[float]] = {key: [] for key in keys or ["overall"]}
        for i, score in enumerate(scores):
            for key in metrics:
                try:
                    metrics[key].append(float(score[key]))
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"reward function {self.name!r}: {key!r} of sample {i} is not a number: {score[key]!r}"
                    ) from e
        return metrics

    def compute_reward(self, data) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """Score every row of ``data`` (a ``DataProto``).

        Reads ``data.batch["responses"]`` (bs, R) right-padded token ids, ``data.batch["response_mask"]``
        (bs, R) 1 on valid tokens, and ``data.non_tensor_batch["ground_truth"]`` (bs,) solution lists.

        Returns:
            token_level_scores: (bs, R) float32 zeros except ``overall`` at the row's last valid token
                (index ``valid_len - 1``). A row with no valid token is still scored (empty response) and
                appears in the metrics, but its score is placed nowhere (the row stays all zero): there is
                no token to credit, and writing to index -1 (the original's behaviour) would reward padding.
            metrics: every key the function returned -> list of ``bs`` floats, in row order.
        """
        texts, lengths = self._decode(data)
        prefetch = getattr(self.refusal_detector, "judge_many", None)
        if prefetch is not None:  # one judge call for the batch; the per-sample calls then hit its cache
            prefetch(texts)
        scores = self._score(texts, lengths, data.non_tensor_batch["ground_truth"])
        metrics = self._collect(scores)
        nan_rows = [i for i, value in enumerate(metrics["overall"]) if math.isnan(value)]
        if nan_rows:
            raise ValueError(f"reward function {self.name!r} returned NaN 'overall' for samples {nan_rows[:10]}")
        responses = data.batch["responses"]
        token_level_scores = torch.zeros(responses.shape, dtype=torch.float32, device=responses.device)
        for i, (length, overall) in enumerate(zip(lengths, metrics["overall"])):
            if length > 0:
                token_level_scores[i, length - 1] = overall
        return token_level_scores, metrics

    __call__ = compute_reward
