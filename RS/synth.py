"""The runner's ``synth`` stage: RULE's files for an RWKU target that has none (RULE released them for 50 of 200).

``python -m RS.synth --target-dir DIR --out DIR config=examples/rebo_from_rs_smollm2.yaml [key=value ...]``

reads the ReBO YAML (its ``synthesis:`` section picks the generator, priming, ratios and filters; its
``worker.rollout`` and ``trainer`` sections where it runs) and writes into ``--out``:

* ``reject_target.json`` — RS's rows: the target's forget questions (RWKU's ``reject.json``) each with a refusal
  naming the target (:func:`data.synthesis.reject_target_rows`);
* ``reject_with_fb_neighbor_target.json``, ``rl_rejection_with_fb_neighbor_target.json`` (ReBO's training
  file: forget + boundary prompts), ``rl_rejection_eval_target.json`` (validation, from the probes) and, last,
  ``synthesis_stats.json`` (kept / filtered per kind and reason): :func:`data.synthesis.build_rebo_files`.

The generator writes through the engine's rollout (an ``FSDPWorker`` with the ``rollout`` role: HF's sampling
loop on CPU, vLLM with ``worker.rollout.name=vllm``) from ``synthesis.generator`` (null = the model in
``worker.actor.model.model_path``, which the runner sets to its ``--model``), or through a plugin
(``synthesis.plugin: module:function``, a factory ``(SynthesisConfig) -> generate_fn``; contract in
:mod:`data.generators`). Every file is written atomically; ``synthesis_stats.json`` last marks the stage done.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from verl.trainer.config import PPOConfig, SynthesisConfig
from verl.utils.config import ConfigError, load_config

DONE_FILE = "synthesis_stats.json"


def load_plugin(spec: str, synthesis: SynthesisConfig) -> Callable:
    """``module:function`` -> ``function(synthesis)``, the generate_fn it returns (errors name the spec)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"synthesis.plugin={spec!r}: expected 'module:function'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"synthesis.plugin={spec!r}: {error}") from error
    generate_fn = factory(synthesis)
    if not callable(generate_fn):
        raise ConfigError(f"synthesis.plugin={spec!r} returned {type(generate_fn).__name__}, not a generate_fn")
    return generate_fn


def generator_path(config: PPOConfig) -> str:
    """The generator model: ``synthesis.generator``, else the actor's model (the model before unlearning)."""
    return config.synthesis.generator or config.worker.actor.model.model_path


def rollout_generate_fn(config: PPOConfig) -> tuple[Callable, Callable[[], None]]:
    """(generate_fn, shutdown): one rollout worker group on ``generator_path(config)``, placed as the trainer's.

    ``generate_fn(prompts, prefixes=None, stop=None)`` templates each prompt as one user turn
    (:func:`data.generators.chat_texts`), continues its assistant-turn prefix and returns the new text only."""
    from data.generators import chat_texts
    from verl.single_controller import ClassWithInitArgs
    from verl.single_controller.launch import launch_initialised_worker_groups
    from verl.workers import fsdp_utils
    from verl.workers.fsdp_worker import FSDPWorker
    from verl.workers.rollout.texts import generate_texts

    synthesis, worker = config.synthesis, copy.deepcopy(config.worker)
    worker.actor.model.model_path = generator_path(config)
    if synthesis.generator:  # another model than the actor's: its own tokenizer, not the YAML's actor one
        worker.actor.model.tokenizer_path = None
    worker.rollout.prompt_length = synthesis.max_prompt_length
    worker.rollout.response_length = synthesis.max_new_tokens
    tokenizer = fsdp_utils.load_tokenizer(worker.actor.model.tokenizer_path or worker.actor.model.model_path)
    rollout = ClassWithInitArgs(FSDPWorker, worker, "rollout")
    groups, shutdown = launch_initialised_worker_groups({"rollout": rollout}, config.trainer)
    meta = {
        "n": 1,
        "temperature": synthesis.temperature if synthesis.do_sample else 0.0,
        "top_p": synthesis.top_p if synthesis.do_sample else 1.0,
        "max_new_tokens": synthesis.max_new_tokens,
    }

    def generate(prompts: list[str], prefixes: list[str] | None = None, stop: list[str] | None = None) -> list[str]:
        texts = chat_texts(tokenizer, prompts, prefixes)
        meta_call = {**meta, "stop": list(stop or [])}
        limit = synthesis.max_prompt_length
        return generate_texts(groups["rollout"], tokenizer, texts, meta_call, limit, "synthesis.max_prompt_length")

    return generate, shutdown


def synthesize_target(config: PPOConfig, target_dir: Path, out_dir: Path) -> dict:
    """Write RULE's files for ``target_dir`` into ``out_dir`` (see the module docstring); returns the stats."""
    from data.synthesis import build_rebo_files, reject_target_rows
    from verl.utils.fileio import write_json_atomic

    synthesis = config.synthesis
    if not (target_dir / "reject.json").is_file() and not (target_dir / "reject_target.json").is_file():
        raise FileNotFoundError(f"{target_dir}: no reject.json (RWKU's forget questions) to synthesise from")
    if synthesis.plugin:
        generate_fn, shutdown, source = load_plugin(synthesis.plugin, synthesis), (lambda: None), synthesis.plugin
    else:
        (generate_fn, shutdown), source = rollout_generate_fn(config), generator_path(config)
    try:
        write_json_atomic(out_dir / "reject_target.json", reject_target_rows(target_dir, synthesis.limit))
        stats = build_rebo_files(
            target_dir, out_dir, generate_fn, limit=synthesis.limit, boundary_ratio=synthesis.boundary_ratio,
            seed=synthesis.seed, priming=synthesis.priming,
            settings={"generator": source, "rollout": "plugin" if synthesis.plugin else config.worker.rollout.name,
                      "max_new_tokens": synthesis.max_new_tokens, "do_sample": synthesis.do_sample},
        )  # fmt: skip
    finally:
        shutdown()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m RS.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--target-dir", required=True, help="an RWKU target folder (reject.json + probes)")
    parser.add_argument("--out", required=True, help="where RULE's files for this target are written")
    parser.add_argument("overrides", nargs="*", help="config=YAML and key=value overrides (the ReBO config)")
    args = parser.parse_args(argv)
    try:
        config = load_config(PPOConfig, args.overrides)
        stats = synthesize_target(config, Path(args.target_dir), Path(args.out))
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    kept, asked = stats["kept"], stats["questions"]
    print(
        f"[synth] {args.target_dir}: {asked} questions; kept " + ", ".join(f"{k} {v}/{asked}" for k, v in kept.items())
    )
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
