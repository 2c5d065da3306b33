"""The embedded RULE demo: offline, CPU, SmolLM2-135M-Instruct, a built-in fictitious benchmark.

``python3 -m data.demo [--out log/demo] [--quick]`` runs, for target 1 of the embedded benchmark:

1. **teach**  — SFT on every fact of the fictitious world (targets and neighbours) in RWKU's probe
   format, so the model has knowledge to unlearn;
2. **RS**     — Rejection Steering: SFT on target-naming refusals (``reject_target.json``);
3. **ReBO**   — GRPO on forget + boundary prompts with RULE's reward, KL to the RS model.
   RS and ReBO prompts use RWKU's probe template here (the small model learned its facts in that
   format, and a 135M model does not carry a refusal learned on bare questions over to it);
4. **NPO**    — the baseline, on the target's factual bios (``positive.json``), from the taught model;
5. **eval**   — RWKU forget / neighbour / naturalness suites on every model, a table
   (markdown + CSV) and the forget-retain Pareto plot (PNG) under ``--out``. The refusal columns are by
   ``--refusal-detector`` (default ``strict``), named under the table and in the CSV's ``detector`` column.
6. **attacks** — the attack suite (``verl.eval.attacks``: prefill, multi-turn, 8/4-bit quantization,
   relearning on the target's bios and on unrelated text, knowledge probe) on the model before unlearning,
   RS, RULE and NPO (the demo's one baseline, so its strongest setting), sized for 2 cores (the held-out
   half of the FB + QA facts, :data:`ATTACK_NEIGHBOUR_PROBES` neighbour probes per file, a few relearning
   steps); ``attacks.md`` / ``attacks.csv`` under ``--out``, the knowledge probe relative to the model
   before unlearning. ``--no-attacks`` skips it.

Every stage writes its model under ``--out``; a re-run skips stages whose output is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

COLUMNS = [
    ("forget_fb", "F-FB"),
    ("forget_qa", "F-QA"),
    ("forget_aa", "F-AA"),
    ("forget_all", "F-All"),
    ("neighbor_fb", "N-FB"),
    ("neighbor_qa", "N-QA"),
    ("neighbor_all", "N-All"),
    ("naturalness_refusal_rate_forget", "Refusal(F)"),
    ("naturalness_false_refusal_rate_neighbor", "Refusal(N)"),
    ("naturalness_named_refusal_share", "Named"),
]
ATTACK_NEIGHBOUR_PROBES = 4
# held-out half of the 10 FB + 10 QA forget probes; relearning: 2 blocks of 128 tokens per step
ATTACK_CONFIG = {"neighbor_probes": ATTACK_NEIGHBOUR_PROBES, "relearn_batch_size": 2, "relearn_block_tokens": 128}


def teach_rows(bench: Path, subjects: set[str] | None = None) -> list[dict]:
    """facts.json -> SFT rows in RWKU's probe format (user content + 'Answer: <fact>').

    ``subjects`` limits them to these entities (the demo's target and its neighbours); None = all.
    """
    from verl.eval.prompts import FB_TEMPLATE, QA_TEMPLATE

    rows = []
    for fact in json.loads((bench / "facts.json").read_text()):
        if subjects is not None and fact["subject"] not in subjects:
            continue
        template = FB_TEMPLATE if fact["kind"] == "cloze" else QA_TEMPLATE
        rows.append({"prompt": template.format(query=fact["prompt"]), "response": f"Answer: {fact['response']}"})
    return rows


def probe_format(question: str) -> str:
    """A question or cloze in RWKU's user-content template (the format the demo's model learned facts in)."""
    from verl.utils.prompt_formats import rwku_probe_prompt

    return rwku_probe_prompt(question, {}, ())


def rs_rows(target_dir: Path) -> list[dict]:
    """reject_target.json in probe format: the refusal follows RWKU's 'Answer:' cue, as at evaluation."""
    rows = json.loads((target_dir / "reject_target.json").read_text())
    return [{"prompt": probe_format(r["instruction"]), "response": f"Answer: {r['output']}"} for r in rows]


def rebo_rows(target_dir: Path) -> list[dict]:
    """The ReBO file (forget + boundary rows) with prompts in probe format; solutions unchanged."""
    rows = json.loads((target_dir / "rl_rejection_with_fb_neighbor_target.json").read_text())
    return [{"prompt": probe_format(r["prompt"]), "solution": r["solution"]} for r in rows]


def sft(stage: str, model: str, train_file: Path, out: Path, args, extra: list[str]) -> str:
    """One RS-trainer run (SFT or an unlearning loss); returns the exported final-epoch folder."""
    from RS.config import RSConfig
    from RS.train import run
    from verl.utils.config import load_config

    run_dir = out / stage
    final = run_dir / "final"
    if (final / "config.json").is_file():
        print(f"[demo] {stage}: reusing {final}", flush=True)
        return str(final)
    overrides = [
        f"model.model_path={model}",
        f"data.train_files={train_file}",
        f"trainer.output_dir={out}",
        f"trainer.experiment_name={stage}",
        "trainer.save_every_epoch=false",
        "trainer.backend=inprocess",
        *extra,
    ]
    config = load_config(RSConfig, overrides)
    run(config)
    exported = sorted(run_dir.glob("epoch_*"), key=lambda p: int(p.name.split("_")[-1]))
    os.replace(exported[-1], final)
    return str(final)


def rebo(model: str, train_file: Path, out: Path, args) -> str:
    from verl.trainer.config import PPOConfig
    from verl.trainer.main import run
    from verl.utils.config import load_config

    final = out / "rebo" / "final"
    if (final / "config.json").is_file():
        print(f"[demo] rebo: reusing {final}", flush=True)
        return str(final)
    overrides = [
        f"data.train_files={train_file}",
        "data.max_prompt_length=128",
        f"data.max_response_length={args.rebo_response_tokens}",
        "data.rollout_batch_size=8",
        f"worker.actor.model.model_path={model}",
        "worker.actor.global_batch_size=8",
        "worker.actor.micro_batch_size_per_device_for_update=8",
        "worker.actor.micro_batch_size_per_device_for_experience=32",
        f"worker.actor.optim.lr={args.rebo_lr}",
        "worker.rollout.n=4",
        "worker.rollout.micro_batch_size=32",
        "worker.reward.reward_function=forget_two_stage_abs_target",
        f"algorithm.kl_coef={args.rebo_kl}",
        f"trainer.max_steps={args.rebo_steps}",
        f"trainer.total_epochs={args.rebo_steps}",
        f"trainer.output_dir={out}",
        "trainer.experiment_name=rebo",
        "trainer.save_freq=-2",
        "trainer.logger=[console,jsonl]",
        "trainer.backend=inprocess",
    ]
    run(load_config(PPOConfig, overrides))
    return str(final)


def evaluate(name: str, model: str, bench: Path, out: Path, max_probes: int | None, detector: str = "strict") -> dict:
    """One model's result; a stored one is reused, its refusal figures re-judged when made by another detector."""
    from verl.eval import HFGenerator, run_suites
    from verl.eval.naturalness import metrics_judged_by, result_detector
    from verl.utils.fileio import write_json_atomic

    path = out / "eval" / f"{name}.json"
    if path.is_file():
        result = json.loads(path.read_text())
        if result_detector(result) != detector:
            result = {**result, "metrics": metrics_judged_by(result, detector), "refusal_detector": detector}
            write_json_atomic(path, result)
        return result
    generator = HFGenerator.from_pretrained(model, dtype="fp32", batch_size=32)
    options = {"max_probes": max_probes} if max_probes else {}
    options["refusal_detector"] = detector
    result = run_suites(
        generator, "rwku", bench, target=1, suites=["forget", "neighbor", "naturalness"], options=options
    )
    result = {"method": name, "model": model, **result}
    write_json_atomic(path, result)
    return result


def attack(name: str, model: str, bench: Path, out: Path, config: dict, max_probes: int | None = None) -> dict:
    """The attack suite on one model; ``config`` = ``EvalOptions.attack``. A result already under ``out`` is
    reused when it was run with the same settings."""
    from verl.eval import HFGenerator, run_suites
    from verl.utils.fileio import write_json_atomic

    path = out / "eval" / "attacks" / f"{name}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached["options"]["attack"] == config and cached["options"]["max_probes"] == max_probes:
            return cached
    generator = HFGenerator.from_pretrained(model, dtype="fp32", batch_size=32)
    options = {"attack": config, **({"max_probes": max_probes} if max_probes else {})}
    result = run_suites(generator, "rwku", bench, target=1, suites=["attacks"], options=options)
    result = {"method": name, "model": model, **result}
    write_json_atomic(path, result)
    return result


def attack_tables(results: list[dict], out: Path, reference: str) -> str:
    """``attacks.md`` / ``attacks.csv`` under ``out`` (knowledge relative to ``reference``); returns the markdown."""
    from verl.eval.attack_table import write_attack_tables

    rows = [(r["method"], r["metrics"]) for r in results]
    ref = next(metrics for name, metrics in rows if name == reference)
    markdown_path, _ = write_attack_tables(out, rows, ref, reference)
    return markdown_path.read_text()


def table(results: list[dict], detector: str = "strict") -> tuple[str, str]:
    """(markdown, CSV) of ``results``; the refusal columns' detector under the markdown table and in a CSV column."""
    header = "| Method | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    csv = ["method," + ",".join(label for _, label in COLUMNS) + ",detector"]
    for result in results:
        values = [result["metrics"].get(key) for key, _ in COLUMNS]
        cells = ["-" if v is None else f"{100 * v:.1f}" for v in values]
        lines.append(f"| {result['method']} | " + " | ".join(cells) + " |")
        csv.append(result["method"] + "," + ",".join("" if v is None else f"{100 * v:.2f}" for v in values))
        csv[-1] += f",{detector}"
    lines.append(f"\nRefusal(F), Refusal(N), Named: refusal detector `{detector}` (verl/workers/reward/refusal.py).")
    return "\n".join(lines), "\n".join(csv) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="log/demo", help="output folder (models, results, table, plot)")
    parser.add_argument("--model", default="smollm2", help="base model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--teach-epochs", type=int, default=4, help="epochs of the fact-teaching SFT")
    parser.add_argument(
        "--teach-all",
        action="store_true",
        help="teach every entity's facts, not only the target's and its neighbours'",
    )
    parser.add_argument("--teach-lr", type=float, default=1e-4, help="lr of the fact-teaching SFT")
    parser.add_argument("--rs-epochs", type=int, default=3, help="Rejection Steering epochs")
    parser.add_argument("--rs-lr", type=float, default=2e-5, help="Rejection Steering lr")
    parser.add_argument("--rebo-steps", type=int, default=20, help="ReBO steps (8 prompts x 4 samples each)")
    parser.add_argument("--rebo-lr", type=float, default=1e-5, help="ReBO lr")
    parser.add_argument(
        "--rebo-kl", type=float, default=0.01, help="ReBO KL coefficient (low_var_kl, to the RS model)"
    )
    parser.add_argument("--rebo-response-tokens", type=int, default=32, help="max new tokens per ReBO sample")
    parser.add_argument("--npo-epochs", type=int, default=3, help="NPO baseline epochs")
    parser.add_argument("--npo-lr", type=float, default=1e-5, help="NPO baseline lr")
    parser.add_argument("--max-probes", type=int, default=0, help="probes per file (0 = all; for quick checks)")
    parser.add_argument("--no-attacks", action="store_true", help="skip the attack table")
    parser.add_argument("--attack-relearn-steps", type=int, default=4, help="relearning attack: optimizer steps")
    parser.add_argument("--attack-relearn-lr", type=float, default=5e-5, help="relearning attack: AdamW lr")
    parser.add_argument(
        "--refusal-detector",
        default="strict",
        choices=["rule", "strict"],
        help="detector of the refusal columns: strict (default; the refusal must be the reply's stance) or rule "
        "(RULE's reward regex)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from data.embedded import write_embedded_benchmark
    from verl.eval.pareto import plot_frontier
    from verl.utils.fileio import write_json_atomic
    from verl.utils.models import resolve_model_path
    from verl.utils.rwku_targets import select_targets

    started = time.time()
    out = Path(args.out).resolve()
    bench = out / "benchmark"
    if not (bench / "facts.json").is_file():
        write_embedded_benchmark(bench, seed=0)
    target = select_targets("1", bench)[0]
    target_dir = bench / "Target" / target.dirname
    base = resolve_model_path(args.model)
    neighbours = {
        p["neighbor"] for level in (1, 2) for p in json.loads((target_dir / f"neighbor_level{level}.json").read_text())
    }
    subjects = None if args.teach_all else {target.name, *neighbours}
    write_json_atomic(out / "data" / "teach.json", teach_rows(bench, subjects))
    write_json_atomic(out / "data" / "rs.json", rs_rows(target_dir))
    write_json_atomic(out / "data" / "rebo.json", rebo_rows(target_dir))
    print(f"[demo] target: {target.name}; base model: {base}", flush=True)

    stages = {}
    stages["teach"] = sft(
        "teach", base, out / "data" / "teach.json", out, args,
        [f"optim.lr={args.teach_lr}", f"trainer.epochs={args.teach_epochs}", "optim.warmup_style=cosine",
         "trainer.batch_size=16", "trainer.micro_batch_size_per_device=16"],
    )  # fmt: skip
    stages["rs"] = sft(
        "rs", stages["teach"], out / "data" / "rs.json", out, args,
        [f"optim.lr={args.rs_lr}", f"trainer.epochs={args.rs_epochs}", "trainer.batch_size=4",
         "trainer.micro_batch_size_per_device=4"],
    )  # fmt: skip
    stages["rule"] = rebo(stages["rs"], out / "data" / "rebo.json", out, args)
    stages["npo"] = sft(
        "npo", stages["teach"], target_dir / "positive.json", out, args,
        [f"optim.lr={args.npo_lr}", f"trainer.epochs={args.npo_epochs}", "loss.name=npo", "loss.params={beta: 0.2}",
         "trainer.batch_size=4", "trainer.micro_batch_size_per_device=4", "data.format=text"],
    )  # fmt: skip

    names = {"base": base, "before (taught)": stages["teach"], "RS": stages["rs"], "RULE (RS+ReBO)": stages["rule"]}
    names["NPO"] = stages["npo"]
    detector = args.refusal_detector
    results = [evaluate(name, path, bench, out, args.max_probes or None, detector) for name, path in names.items()]
    markdown, csv = table(results, detector)
    (out / "table.md").write_text(markdown + "\n")
    (out / "table.csv").write_text(csv)
    points = {r["method"]: [(r["metrics"]["forget_all"], r["metrics"]["neighbor_all"], r["method"])] for r in results}
    areas = plot_frontier(points, out / "pareto.png")
    print("\n" + markdown + "\n", flush=True)
    before = next(r for r in results if r["method"] == "before (taught)")["metrics"]
    after = next(r for r in results if r["method"] == "RULE (RS+ReBO)")["metrics"]
    print(
        f"forget score {100 * before['forget_all']:.1f} -> {100 * after['forget_all']:.1f}; "
        f"neighbour score {100 * before['neighbor_all']:.1f} -> {100 * after['neighbor_all']:.1f}; "
        f"refusal rate on forget probes {100 * (before.get('naturalness_refusal_rate_forget') or 0):.1f} -> "
        f"{100 * (after.get('naturalness_refusal_rate_forget') or 0):.1f} ({detector} detector)"
    )
    print(f"Pareto areas: {areas}")
    if not args.no_attacks:
        config = {**ATTACK_CONFIG, "relearn_steps": args.attack_relearn_steps, "relearn_lr": args.attack_relearn_lr}
        attacked = [name for name in names if name != "base"]
        reports = [attack(name, names[name], bench, out, config, args.max_probes or None) for name in attacked]
        print("\n" + attack_tables(reports, out, "before (taught)"), flush=True)
    attacks_written = "" if args.no_attacks else f", {out / 'attacks.md'}, {out / 'attacks.csv'}"
    print(
        f"[demo] wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'pareto.png'}{attacks_written} "
        f"in {time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
