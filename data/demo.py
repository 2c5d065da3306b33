"""The embedded RULE demo: offline, CPU, SmolLM2-135M-Instruct, a built-in fictitious benchmark.

``python3 -m data.demo [--out log/demo] [--baselines ga,gd,npo,dpo,rt,icu]`` runs, for target 1 of the
embedded benchmark:

1. **teach**     — SFT on every fact of the target and its neighbours in RWKU's probe format, so the model
   has knowledge to unlearn (the model "before unlearning");
2. **RS**        — Rejection Steering: SFT on target-naming refusals (``reject_target.json``), every epoch kept;
3. **ReBO**      — GRPO on forget + boundary prompts with RULE's reward, KL to the RS model, from RS's last
   epoch; the forget / neighbour suites run every ``--rebo-eval-every`` steps (its checkpoints' points).
   RS and ReBO prompts use RWKU's probe template here (the small model learned its facts in that format,
   and a 135M model does not carry a refusal learned on bare questions over to it);
4. **baselines** — each at every strength of the ``demo`` profile of its YAML (``examples/baselines/``, read
   by :mod:`RS.baselines`, as ``run_rwku.sh`` does), from the taught model; ICU = the taught model prompted
   with RWKU's unlearning instruction (no training, one point);
5. **eval**      — RWKU forget / neighbour / naturalness suites on every model: a table (markdown + CSV), the
   forget-retain plot ``pareto.png`` (one curve per method, the taught model as the "before" star) and
   ``pareto_area.md`` (each curve's area) under ``--out``. The refusal columns are by ``--refusal-detector``
   (default ``strict``), named under the table and in the CSV's ``detector`` column;
6. **attacks**   — the attack suite (``verl.eval.attacks``: prefill, multi-turn, 8/4-bit quantization,
   relearning on the target's bios and on unrelated text, knowledge probe) on the model before unlearning,
   RS's last epoch, RULE and each trained baseline at its strongest setting (its lowest F-All), sized for
   2 cores (the held-out half of the FB + QA facts, :data:`ATTACK_NEIGHBOUR_PROBES` neighbour probes per file,
   a few relearning steps); ``attacks.md`` / ``attacks.csv`` under ``--out``, the knowledge probe relative
   to the model before unlearning. ``--no-attacks`` skips it.

RULE's points are its RS epochs and ReBO checkpoints. Every stage writes under ``--out``; a re-run skips the
stages whose output is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
SUITES = ["forget", "neighbor", "naturalness"]
DEMO_BASELINES = "ga,npo,dpo,rt,icu"
CPU = ["trainer.backend=inprocess", "trainer.n_gpus_per_node=0", "model.dtype=fp32", "trainer.progress=false"]
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


def rt_rows(target_dir: Path, target: str) -> list[dict]:
    """RWKU's RT file (``reject.json``) for the embedded target: RS's questions, each with a generic refusal
    (round robin over the built-in list, as RWKU assigns ``idontknow.jsonl``); the embedded benchmark has none."""
    from RS.data import build_refusal_rows, read_questions

    return build_refusal_rows(read_questions(target_dir / "reject_target.json"), target, mode="generic")


def sft(stage: str, model: str, train_file: Path, out: Path, extra: list[str], config: str = "") -> list[str]:
    """One RS-trainer run (SFT or an unlearning loss) from ``config`` + ``extra``; returns its exported epochs."""
    from RS.config import RSConfig
    from RS.train import run
    from verl.utils.config import load_config
    from verl.utils.fileio import write_json_atomic

    run_dir = out / stage
    done = run_dir / "exports.json"
    overrides = [f"config={config}"] if config else []
    overrides += [f"model.model_path={model}", f"data.train_files={train_file}", f"trainer.output_dir={out}"]
    overrides += [f"trainer.experiment_name={stage}", "trainer.save_every_epoch=false", *CPU, *extra]
    if done.is_file():
        previous = json.loads(done.read_text())
        if previous.get("overrides") == overrides:
            print(f"[demo] {stage}: reusing {run_dir}", flush=True)
            return previous["exports"]
        print(f"[demo] {stage}: its settings changed since {done} was written; training it again", flush=True)
    run(load_config(RSConfig, overrides))
    exported = json.loads((run_dir / "summary.json").read_text())["exports"]  # this run's, not a stale epoch_*
    write_json_atomic(done, {"overrides": overrides, "exports": exported})
    return exported


def rebo(model: str, train_file: Path, bench: Path, out: Path, args) -> tuple[str, dict[int, dict]]:
    """ReBO from ``model``; returns (final export, {step: in-training forget/neighbour metrics})."""
    from verl.trainer.config import PPOConfig
    from verl.trainer.main import run
    from verl.utils.config import load_config
    from verl.utils.fileio import write_json_atomic

    run_dir = out / "rebo"
    overrides = [
        f"data.train_files={train_file}", "data.max_prompt_length=128", "data.rollout_batch_size=8",
        f"data.max_response_length={args.rebo_response_tokens}", f"worker.actor.model.model_path={model}",
        "worker.actor.global_batch_size=8", "worker.actor.micro_batch_size_per_device_for_update=8",
        "worker.actor.micro_batch_size_per_device_for_experience=32", f"worker.actor.optim.lr={args.rebo_lr}",
        "worker.rollout.n=4", "worker.rollout.micro_batch_size=32", f"algorithm.kl_coef={args.rebo_kl}",
        "worker.reward.reward_function=forget_two_stage_abs_target", f"trainer.max_steps={args.rebo_steps}",
        f"trainer.total_epochs={args.rebo_steps}", f"trainer.output_dir={out}", "trainer.experiment_name=rebo",
        "trainer.save_freq=-2", "trainer.logger=[console,jsonl]", "trainer.backend=inprocess",
        "evaluator.benchmark=rwku", f"evaluator.data_dir={bench}", "evaluator.targets=1",
        f"evaluator.suites=[{','.join(SUITES)}]", f"trainer.val_freq={args.rebo_eval_every}",
        *([f"evaluator.max_probes={args.max_probes}"] if args.max_probes else []),
    ]  # fmt: skip
    settings = run_dir / "demo_overrides.json"  # written first: a killed run resumes only with the same settings
    if run_dir.is_dir() and (not settings.is_file() or json.loads(settings.read_text()) != overrides):
        print(f"[demo] rebo: {run_dir} was made with other settings; training it again", flush=True)
        shutil.rmtree(run_dir)
    if (run_dir / "final" / "config.json").is_file():
        print(f"[demo] rebo: reusing {run_dir / 'final'}", flush=True)
    else:
        write_json_atomic(settings, overrides)
        run(load_config(PPOConfig, overrides))
    checkpoints = {}
    prefix = "val/rwku/"
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if f"{prefix}forget_all" in row:
            checkpoints[int(row["step"])] = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
    return str(run_dir / "final"), checkpoints


def load_fresh(result_path: Path, model: str) -> dict | None:
    """The stored result of ``model`` when it is newer than the model's export, else None (a retrained model is
    evaluated again)."""
    if not result_path.is_file():
        return None
    result = json.loads(result_path.read_text())
    config = Path(model) / "config.json"
    stale = config.is_file() and result_path.stat().st_mtime < config.stat().st_mtime
    return result if result.get("model") == model and not stale else None


def evaluate(
    name: str, model: str, bench: Path, out: Path, max_probes: int | None, icu: bool = False, detector: str = "strict"
) -> dict:
    """One model's result; a stored one is reused, its refusal figures re-judged when made by another detector."""
    from verl.eval import HFGenerator, run_suites
    from verl.eval.naturalness import metrics_judged_by, result_detector
    from verl.eval.report import model_tag
    from verl.utils.fileio import write_json_atomic

    path = out / "eval" / f"{model_tag(name)}.json"
    result = load_fresh(path, model)
    if result is not None:
        if result_detector(result) != detector:
            result = {**result, "metrics": metrics_judged_by(result, detector), "refusal_detector": detector}
            write_json_atomic(path, result)
        return result
    generator = HFGenerator.from_pretrained(model, dtype="fp32", batch_size=32)
    options = {"max_probes": max_probes, "icu": icu} if max_probes else {"icu": icu}
    options["refusal_detector"] = detector
    result = run_suites(generator, "rwku", bench, target=1, suites=SUITES, options=options)
    result = {"method": name, "model": model, **result}
    write_json_atomic(path, result)
    return result


def baselines(methods: list[str], teach: str, target_dir: Path, bench: Path, out: Path, args) -> dict:
    """{method: [(row name, strength label, result), ...]} for every strength of the demo profile."""
    from RS.baselines import BASELINES, UNTRAINED, baseline_config, read_strengths

    runs: dict[str, list] = {}
    for method in methods:
        if method in UNTRAINED:
            icu = evaluate("ICU", teach, bench, out, args.max_probes or None, icu=True, detector=args.refusal_detector)
            runs["ICU"] = [("ICU", "", icu)]
            continue
        config = baseline_config(method)
        train_file = target_dir / BASELINES[method][1]
        extra = [f"loss.name={method}", "model.enable_gradient_checkpointing=false"]
        if method in ("gd", "npo_gd"):  # the boundary rows RULE's ReBO trains on, as the retain set
            extra.append(f"data.retain_files={target_dir / 'rl_rejection_with_fb_neighbor_target.json'}")
        for strength in read_strengths(method, "demo"):
            stage = f"{method}_{strength.tag}"
            exports = sft(stage, teach, train_file, out, [*extra, *strength.train_args], str(config))
            labels = [f"{strength.label}, epoch {e}" for e in strength.epochs] or [strength.label]  # points: epochs
            for label, export in zip(labels, exports[-len(labels) :]):
                name = f"{method.upper()} ({label})"
                result = evaluate(name, export, bench, out, args.max_probes or None, detector=args.refusal_detector)
                runs.setdefault(method.upper(), []).append((name, label, result))
    return runs


def attack(name: str, model: str, bench: Path, out: Path, config: dict, max_probes: int | None = None) -> dict:
    """The attack suite on one model; ``config`` = ``EvalOptions.attack``. A result already under ``out`` is
    reused when it was run with the same settings."""
    from verl.eval import HFGenerator, run_suites
    from verl.utils.fileio import write_json_atomic

    path = out / "eval" / "attacks" / f"{name}.json"
    cached = load_fresh(path, model)
    if cached is not None:
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


def attacked_models(teach: str, curves: dict[str, list]) -> dict[str, str]:
    """{row name: model path} the attack table covers: the taught model, RS's last epoch, RULE's final model and
    each trained baseline at its strongest setting (its lowest F-All); ICU and ReBO's in-training points have
    no model of their own."""
    models = {"before (taught)": teach}
    for method, runs in curves.items():
        trained = [(name, r) for name, _, r in runs if "model" in r and r["options"].get("icu") is not True]
        if method == "RULE":
            models.update({name: r["model"] for name, r in trained if name.startswith(("RS epoch", "RULE"))})
            rs = [name for name in models if name.startswith("RS epoch")]
            for name in rs[:-1]:
                del models[name]
        elif trained:
            name, r = min(trained, key=lambda item: item[1]["metrics"]["forget_all"])
            models[name] = r["model"]
    return models


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", default="log/demo", help="output folder (models, results, table, plot)")
    add("--model", default="smollm2", help="base model (default: the embedded SmolLM2-135M-Instruct)")
    add("--teach-epochs", type=int, default=4, help="epochs of the fact-teaching SFT")
    add("--teach-all", action="store_true", help="teach every entity's facts, not only the target's and neighbours'")
    add("--teach-lr", type=float, default=1e-4, help="lr of the fact-teaching SFT")
    add("--rs-epochs", type=int, default=3, help="Rejection Steering epochs (each one is a point of RULE's curve)")
    add("--rs-lr", type=float, default=2e-5, help="Rejection Steering lr")
    add("--rebo-steps", type=int, default=10, help="ReBO steps (8 prompts x 4 samples each)")
    add("--rebo-eval-every", type=int, default=5, help="evaluate ReBO every N steps (its checkpoints' points)")
    add("--rebo-lr", type=float, default=1e-5, help="ReBO lr")
    add("--rebo-kl", type=float, default=0.01, help="ReBO KL coefficient (low_var_kl, to the RS model)")
    add("--rebo-response-tokens", type=int, default=32, help="max new tokens per ReBO sample")
    add("--baselines", default=DEMO_BASELINES, help=f"comma list (default {DEMO_BASELINES}; 'none' for RULE only); "
        "strengths: the demo profile of examples/baselines/<method>.yaml")  # fmt: skip
    add("--skip-rule", action="store_true", help="train and evaluate only the baselines (e.g. to tune one)")
    add("--max-probes", type=int, default=0, help="probes per file (0 = all; for quick checks)")
    add("--no-attacks", action="store_true", help="skip the attack table")
    add("--attack-relearn-steps", type=int, default=4, help="relearning attack: optimizer steps")
    add("--attack-relearn-lr", type=float, default=5e-5, help="relearning attack: AdamW lr")
    add("--refusal-detector", default="strict", choices=["rule", "strict"],
        help="detector of the refusal columns: strict (default; the refusal must be the reply's stance) or rule "
        "(RULE's reward regex)")  # fmt: skip
    return parser


def report(out: Path, before: dict, curves: dict[str, list]) -> dict:
    """pareto.png + pareto_area.md (RULE and every baseline as curves, the taught model as the star)."""
    from verl.eval.pareto import area_report, area_table
    from verl.eval.pareto_plot import plot_frontier
    from verl.utils.fileio import write_text_atomic

    def point(result: dict, label: str = "") -> tuple:
        return (result["metrics"]["forget_all"], result["metrics"]["neighbor_all"], label)

    methods = {method: [point(r, label) for _, label, r in runs] for method, runs in curves.items()}
    reference = point(before)[:2]
    title = "Embedded benchmark, target 1: forget-retain trade-off"
    plot_frontier(methods, out / "pareto.png", title=title, reference=reference)
    lines = ["# Forget-retain areas (the demo)\n", area_report(methods, reference), "| method | run | F-All | N-All |"]
    lines += ["|---|---|---|---|"] + [
        f"| {method} | {name} | {100 * r['metrics']['forget_all']:.1f} | {100 * r['metrics']['neighbor_all']:.1f} |"
        for method, runs in curves.items()
        for name, _, r in runs
    ]
    write_text_atomic(out / "pareto_area.md", "\n".join(lines) + "\n")
    return area_table(methods, (0.0,))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from data.embedded import write_embedded_benchmark
    from RS.baselines import UNTRAINED, baseline_config
    from verl.utils.fileio import write_json_atomic
    from verl.utils.models import resolve_model_path
    from verl.utils.rwku_targets import select_targets

    methods = [m.strip() for m in args.baselines.split(",") if m.strip() and m.strip() != "none"]
    for method in methods:  # an unknown name stops the demo before any training
        if method not in UNTRAINED:
            baseline_config(method)
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
    write_json_atomic(target_dir / "reject.json", rt_rows(target_dir, target.name))
    print(f"[demo] target: {target.name}; base model: {base}; baselines: {','.join(methods) or 'none'}", flush=True)
    probes = args.max_probes or None
    detector = args.refusal_detector

    teach = sft(
        "teach", base, out / "data" / "teach.json", out,
        [f"optim.lr={args.teach_lr}", f"trainer.epochs={args.teach_epochs}", "optim.warmup_style=cosine",
         "trainer.batch_size=16", "trainer.micro_batch_size_per_device=16"],
    )[-1]  # fmt: skip
    results = [evaluate("base", base, bench, out, probes, detector=detector),
               evaluate("before (taught)", teach, bench, out, probes, detector=detector)]  # fmt: skip
    curves: dict[str, list] = {}
    if not args.skip_rule:
        rs_epochs = sft(
            "rs", teach, out / "data" / "rs.json", out,
            [f"optim.lr={args.rs_lr}", f"trainer.epochs={args.rs_epochs}", "trainer.batch_size=4",
             "trainer.micro_batch_size_per_device=4", "trainer.save_every_epoch=true"],
        )  # fmt: skip
        rule = [(f"RS epoch {k}", f"RS {k}", evaluate(f"RS epoch {k}", p, bench, out, probes, detector=detector))
                for k, p in enumerate(rs_epochs, 1)]  # fmt: skip
        final, checkpoints = rebo(rs_epochs[-1], out / "data" / "rebo.json", bench, out, args)
        for step, metrics in sorted(checkpoints.items()):
            if step < args.rebo_steps:  # the final model is evaluated below, as every other model
                rule.append((f"ReBO step {step}", f"ReBO {step}", {"method": f"ReBO step {step}", "metrics": metrics}))
        name = f"RULE (RS+ReBO, step {args.rebo_steps})"
        rule.append((name, f"ReBO {args.rebo_steps}", evaluate(name, final, bench, out, probes, detector=detector)))
        curves["RULE"] = rule
    curves.update(baselines(methods, teach, target_dir, bench, out, args))
    results += [r for runs in curves.values() for _, _, r in runs]
    markdown, csv = table(results, detector)
    (out / "table.md").write_text(markdown + "\n")
    (out / "table.csv").write_text(csv)
    before = results[1]
    areas = report(out, before, curves)
    print("\n" + markdown + "\n", flush=True)
    half = before["metrics"]["forget_all"] / 2
    for method, runs in curves.items():
        reached = [f"{label or method}: F-All {100 * r['metrics']['forget_all']:.1f}, N-All "
                   f"{100 * r['metrics']['neighbor_all']:.1f}" for _, label, r in runs
                   if r["metrics"]["forget_all"] <= half]  # fmt: skip
        print(f"{method} (area {areas[method][0.0]:.3f}): at F-All <= {100 * half:.1f} (half of before): "
              + ("; ".join(reached) or "none"))  # fmt: skip
    if not args.no_attacks:
        config = {**ATTACK_CONFIG, "relearn_steps": args.attack_relearn_steps, "relearn_lr": args.attack_relearn_lr}
        models = attacked_models(teach, curves)
        reports = [attack(name, path, bench, out, config, probes) for name, path in models.items()]
        print("\n" + attack_tables(reports, out, "before (taught)"), flush=True)
    attacks_written = "" if args.no_attacks else f", {out / 'attacks.md'}"
    print(f"[demo] wrote {out / 'table.md'}, {out / 'pareto.png'}, {out / 'pareto_area.md'}{attacks_written} in "
          f"{time.time() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
