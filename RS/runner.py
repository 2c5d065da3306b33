"""RULE's per-benchmark runners: ``python -m RS.runner {rwku,muse} [options]`` (``run_rwku.sh`` / ``run_muse.sh``).

Stages (``--stages``, all by default, in this order):

* ``base``      evaluate the model before unlearning (MUSE on the embedded book: teach the book first);
* ``synth``     RWKU targets without RULE's released files (RULE released them for 50 of 200; ``--synthesize``):
  ``reject_target`` from RWKU's ``reject.json`` and the ReBO files through boundary synthesis with the ReBO
  YAML's ``synthesis:`` section (:mod:`RS.synth`), into ``OUT/<run>/synth/<target>/``, which RS and ReBO read;
* ``rs``        Rejection Steering (``RS.train``), exports at the ``--rs-epochs`` ReBO starts from;
* ``rebo``      ReBO (``verl.trainer.main``) from each of those RS epochs;
* ``baselines`` the offline baselines (``--baselines``) at every strength of their YAML (``RS/baselines.py``);
* ``eval``      evaluate every RS epoch, every ReBO run (RULE) and every baseline strength;
* ``table``     ``verl.eval.collect`` over all of it: ``OUT/tables/`` (RWKU Table 1, RULE's naturalness table,
  the MUSE table, the forget-retain Pareto plot and areas).

Profiles: with a GPU, the paper's setting (Llama-3-8B-Instruct, ``examples/*_llama3.yaml``, ``--gpus`` per node,
every suite and the paper's baselines). Without one, the CPU profile: SmolLM2-135M-Instruct in fp32,
``examples/*_smollm2.yaml``, one in-process worker per 8 cores (at least one), no ``utility`` suite (hours per
model on 2 cores; ask with ``--suites``), baselines GA and NPO. ``--smoke`` shrinks every stage to seconds
(a few rows and probes, 1 RS epoch, 2 ReBO steps, 2 strengths per baseline) to check a setup.

Outputs: ``OUT/<run>/`` (``synth/<target>/``, ``rs/``, ``rebo_rs<E>/``, ``baselines/<method>_<strength>/``; ``<run>`` = the target's
folder, or ``batch_<spec>`` with ``--batch``), ``OUT/eval/<model>/<target>.json``, ``OUT/tables/``. A rerun of
the same command skips complete stages and resumes a killed ReBO run (see :mod:`RS.pipeline`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from RS.baselines import BASELINES, UNTRAINED, baseline_config, read_strengths
from RS.pipeline import Pipeline, StageError

REPO = Path(__file__).resolve().parents[1]
STAGES = ("base", "synth", "rs", "rebo", "baselines", "eval", "table")
SMOKE = {
    "rs": ["trainer.epochs=1", "trainer.max_steps=2", "data.max_samples=8", "trainer.batch_size=4",
           "trainer.micro_batch_size_per_device=4", "data.max_length=256", "trainer.progress=false"],
    "rebo": ["trainer.max_steps=2", "data.rollout_batch_size=4", "worker.actor.global_batch_size=4",
             "worker.rollout.n=2", "data.max_response_length=8", "data.max_val_samples=4", "evaluator.max_probes=2",
             "worker.actor.micro_batch_size_per_device_for_update=8",
             "worker.actor.micro_batch_size_per_device_for_experience=8", "worker.rollout.micro_batch_size=8",
             "trainer.val_freq=2", "trainer.save_freq=1", "trainer.save_limit=1", "trainer.logger=[jsonl]"],
    "baseline": ["trainer.epochs=1", "trainer.max_steps=2", "data.max_samples=4", "trainer.batch_size=2",
                 "trainer.micro_batch_size_per_device=2", "data.max_length=128", "trainer.progress=false"],
    "synth": ["synthesis.limit=4", "synthesis.max_new_tokens=8"],
    "eval": ["--max-probes", "3", "--max-new-tokens-cap", "8", "--no-progress"],
}  # fmt: skip


@dataclass
class Profile:
    """What a run uses on this machine; every field can be overridden on the command line."""

    name: str
    model: str
    rs_config: str
    rebo_config: str
    rs_epochs: str
    suites: str
    baselines: str
    placement: list[str] = field(default_factory=list)  # worker placement overrides for both trainers
    eval_args: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.name} profile: model {self.model}; RS {self.rs_config} (epochs {self.rs_epochs}); ReBO "
                f"{self.rebo_config}; suites {self.suites}; baselines {self.baselines}; {' '.join(self.placement)}; "
                f"eval {' '.join(self.eval_args)}")  # fmt: skip


def make_profile(benchmark: str, gpus: int | None) -> Profile:
    """The GPU profile when ``gpus`` (else the visible GPUs) > 0, the CPU profile otherwise."""
    from verl.utils import device

    if gpus is None:
        gpus = device.device_count()
    if gpus > 0:
        suites = (
            "forget,neighbor,mia,utility,naturalness"
            if benchmark == "rwku"
            else "muse_verbmem,muse_knowmem,muse_privleak"
        )
        model = "meta-llama/Meta-Llama-3-8B-Instruct" if benchmark == "rwku" else "muse-bench/MUSE-Books_target"
        return Profile(
            "gpu", model, "examples/rs_llama3.yaml", "examples/rebo_llama3.yaml", "2,3" if benchmark == "rwku" else "1,2,3",
            suites, "ga,npo,simnpo,rt,dpo" + ",icu" * (benchmark == "rwku"),
            [f"trainer.n_gpus_per_node={gpus}", "trainer.backend=ray"],
        )  # fmt: skip
    workers = max(1, (os.cpu_count() or 1) // 8)
    placement = ["trainer.n_gpus_per_node=0", f"trainer.n_workers={workers}"]
    placement.append("trainer.backend=inprocess" if workers == 1 else "trainer.backend=ray")
    if benchmark == "rwku":
        rs, rebo, suites = (
            "examples/rs_ul_smollm2.yaml",
            "examples/rebo_from_rs_smollm2.yaml",
            "forget,neighbor,mia,naturalness",
        )
    else:
        rs, rebo, suites = (
            "examples/rs_muse_smollm2.yaml",
            "examples/rebo_muse_smollm2.yaml",
            "muse_verbmem,muse_knowmem,muse_privleak",
        )
    return Profile("cpu", "smollm2", rs, rebo, "1" if benchmark == "rwku" else "2", suites, "ga,npo", placement, ["--dtype", "fp32"])  # fmt: skip


def build_parser(benchmark: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"bash run_{benchmark}.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--model", help="base model (default: the profile's): a hub id, a folder, 'smollm2' or 'tiny:DIR'")
    add("--data-dir", help="RWKU folder holding Target/ (downloaded when missing); MUSE books folder "
        "(default: RWKU data/rwku; MUSE on CPU: the embedded book, on GPU: downloaded)")  # fmt: skip
    add("--out", default=f"log/{benchmark}", help=f"outputs (default log/{benchmark})")
    add("--stages", default=",".join(STAGES), help=f"comma list of {','.join(STAGES)} (default: all)")
    add("--rs-epochs", help="RS epochs ReBO starts from (default: the profile's)")
    add("--rs-config", help="RS YAML (default: the profile's)")
    add("--rebo-config", help="ReBO YAML (default: the profile's)")
    add("--gpus", type=int, default=None, help="GPUs per node (default: the visible ones; 0 = the CPU profile)")
    add("--suites", help="evaluation suites (default: the profile's)")
    add("--baselines", help=f"comma list of {','.join([*BASELINES, *UNTRAINED])} or 'none' (default: the profile's)")
    add("--retain-files", default="", help="retain rows for gd / npo_gd (comma list)")
    add("--smoke", action="store_true", help="shrink every stage to seconds (a setup check; CI runs it)")
    add("--dry-run", action="store_true", help="print every stage's command instead of running it")
    add("--refusal-detector", default="strict", choices=["rule", "strict", "judge"],
        help="detector of the evaluations' and tables' refusal figures (default strict; the reward keeps its YAML's)")  # fmt: skip
    add("--judge-model", default=None, help="HF chat model for --refusal-detector judge")
    if benchmark == "rwku":
        add("--targets", default="1-10", help="RWKU targets: ids, ranges, names (default 1-10)")
        add("--batch", action="store_true", help="one batch-target run over all targets instead of one per target")
        add("--synthesize", default="missing", choices=["missing", "all"],
            help="synth stage: for targets without RULE's files (default), or for every target (RULE's own unused)")  # fmt: skip
    return parser


def target_files(folders: list[Path], name: str) -> str:
    return ",".join(str(folder / name) for folder in folders)


def retarget(
    config: str, folders: list[Path], keys: list[str], synthesized: dict[Path, Path] | None = None
) -> list[str]:
    """Point each ``keys`` file of ``config`` at the same file name in each of ``folders`` (comma-joined); a
    file of RULE's own (``data.download.RULE_ONLY_FILES``) of a folder in ``synthesized`` comes from its synth
    folder instead."""
    import yaml

    from data.download import RULE_ONLY_FILES

    synthesized = synthesized or {}

    tree = yaml.safe_load((REPO / config).read_text()) or {}
    overrides = []
    for key in keys:
        node = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node:
            names = [Path(f).name for f in str(node).split(",")]
            paths = [
                str(synthesized.get(folder, folder) / n if Path(n).stem in RULE_ONLY_FILES else folder / n)
                for n in names
                for folder in folders
            ]
            overrides.append(f"{key}=" + ",".join(paths))
    return overrides


def run_rwku(args, profile: Profile, stages: set[str]) -> Pipeline:
    from data.download import fetch_rwku
    from verl.utils.rwku_targets import select_targets

    out = Path(args.out)
    local = args.data_dir if args.data_dir and Path(args.data_dir, "Target").is_dir() else None
    optional = ["rule"] if stages & {"synth", "rs", "rebo"} else []
    root = Path(fetch_rwku(args.targets, out / "data", rwku_files(profile, stages), local, optional=optional))
    root = root.resolve()
    targets = select_targets(args.targets, root)
    groups = [targets] if args.batch else [[t] for t in targets]
    pipe = Pipeline(out, dry_run=args.dry_run)
    smoke = SMOKE if args.smoke else {}
    eval_args = [*profile.eval_args, "--data-dir", str(root), *smoke.get("eval", [])]
    suites = profile.suites.split(",")
    epochs = [1] if args.smoke else [int(e) for e in profile.rs_epochs.split(",")]
    model = args.model or profile.model
    spec = ",".join(t.dirname for t in targets)
    pipe.evaluate("before", "base", model, [t.dirname for t in targets], suites, [*eval_args, "--targets", spec],
                  "rwku", run="base" in stages)  # fmt: skip
    for group in groups:
        run = out / (f"batch_{len(group)}_targets" if args.batch else group[0].dirname)
        folders = [root / "Target" / t.dirname for t in group]
        names = [t.dirname for t in group]
        evaluate = dict(names=names, suites=suites, args=[*eval_args, "--targets", ",".join(names)], benchmark="rwku",
                        run="eval" in stages)  # fmt: skip
        synthesized = synthesize(args, profile, stages, pipe, run, model, folders, smoke)
        rs_dir = run / "rs"
        if "rs" in stages:
            overrides = [f"config={profile.rs_config}", f"model.model_path={model}", *profile.placement]
            overrides += retarget(profile.rs_config, folders, ["data.train_files", "data.retain_files"], synthesized)
            pipe.train_rs("rs", rs_dir, overrides + smoke.get("rs", []), epochs)
        for epoch in epochs:
            start = rs_dir / f"epoch_{epoch}"
            pipe.evaluate(f"RULE/RS-epoch{epoch}", f"rs_epoch{epoch}", start, **evaluate)
            if "rebo" in stages:
                need(pipe, start, "rs")
                overrides = [
                    f"config={profile.rebo_config}",
                    f"worker.actor.model.model_path={start}",
                    *profile.placement,
                ]
                overrides += retarget(
                    profile.rebo_config, folders, ["data.train_files", "data.val_files"], synthesized
                )
                overrides += [f"evaluator.data_dir={root}", f"evaluator.targets={','.join(names)}"]
                pipe.train_rebo(
                    f"rebo from RS epoch {epoch}", run / f"rebo_rs{epoch}", overrides + smoke.get("rebo", [])
                )
            pipe.evaluate(
                f"RULE/RS-epoch{epoch}+ReBO", f"rule_rs{epoch}", run / f"rebo_rs{epoch}" / "final", **evaluate
            )
        run_baselines(args, profile, stages, pipe, run, model, folders, evaluate, smoke)
    return pipe


SYNTH_FILES = ("reject_target", "rl_rejection_with_fb_neighbor_target", "rl_rejection_eval_target")
"""RULE's files that RS and ReBO read; a target lacking one of them goes through the synth stage."""


def has_rule_files(folder: Path) -> bool:
    return all((folder / f"{stem}.json").is_file() for stem in SYNTH_FILES)


def synthesize(args, profile, stages, pipe, run, model, folders, smoke) -> dict[Path, Path]:
    """{target folder: its synth folder} for the targets whose RULE files RS / ReBO read from the synth stage
    (those without RULE's files, or all with ``--synthesize all``); runs that stage when selected."""
    chosen = [f for f in folders if args.synthesize == "all" or not has_rule_files(f)]
    synthesized = {folder: run / "synth" / folder.name for folder in chosen}
    for folder, out_dir in synthesized.items():
        if "synth" in stages:
            overrides = [f"config={profile.rebo_config}", f"worker.actor.model.model_path={model}", *profile.placement]
            written = [
                out_dir / "rl_rejection_with_fb_neighbor_target.json",
                out_dir / "rl_rejection_eval_target.json",
            ]
            overrides += [f"data.train_files={written[0]}", f"data.val_files={written[1]}", "evaluator.benchmark=none"]
            overrides += smoke.get("synth", [])
            pipe.synthesize(f"synth {folder.name}", folder, out_dir, overrides)
        elif stages & {"rs", "rebo"} and not pipe.dry_run and not has_rule_files(out_dir):
            why = "RULE's files" if args.synthesize == "missing" else "synthesised files (--synthesize all)"
            raise StageError(f"{folder} has no {why} and {out_dir} is empty: run the synth stage (--stages synth,...)")
    return synthesized


def rwku_files(profile: Profile, stages: set[str]) -> list[str]:
    """The RWKU file groups / names the selected stages, suites and baselines read (nothing more is fetched);
    RULE's own files are fetched as optional: the synth stage builds them where a target has none."""
    files = ["probes"]
    suites = profile.suites.split(",")
    files += [group for group in ("mia", "utility") if group in suites]
    if "synth" in stages:
        files.append("reject")  # RWKU's forget questions, on the hub for every target
    if "baselines" in stages:
        methods = [m for m in profile.baselines.split(",") if m in BASELINES]
        files += sorted({BASELINES[m][1] for m in methods})
    return files


def need(pipe: Pipeline, path: Path, stage: str) -> None:
    if not pipe.dry_run and not (path / "config.json").is_file():
        raise StageError(f"{path} is missing: run the {stage} stage first (--stages {stage},...)")


def run_baselines(
    args, profile, stages, pipe, run, model, folders, evaluate, smoke, corpus: str | None = None
) -> None:
    """Every baseline of the profile at every strength: train (``baselines``) and evaluate (``eval``)."""
    methods = [m for m in profile.baselines.split(",") if m and m != "none"]
    for method in methods:
        if method in UNTRAINED:  # ICU: the model before unlearning, every probe prefixed by RWKU's instruction
            if evaluate["benchmark"] != "rwku":
                raise ValueError(f"--baselines {method}: ICU is an RWKU baseline (its instruction names the target)")
            pipe.evaluate("ICU", method, model, **{**evaluate, "args": [*evaluate["args"], "--icu"]})
            continue
        if method in ("gd", "npo_gd") and not args.retain_files:
            raise ValueError(f"--baselines {method} needs retain rows: --retain-files FILES")
        config, train_file = baseline_config(method).name, BASELINES[method][1]  # unknown method: a ValueError
        strengths = read_strengths(method, f"{evaluate['benchmark']}-{profile.name}")[: 2 if args.smoke else None]
        for strength in strengths:
            tag = f"{method}_{strength.tag}"
            run_dir = run / "baselines" / tag
            point_epochs = strength.epochs[:1] if args.smoke else strength.epochs  # smoke: trainer.epochs=1
            if "baselines" in stages:
                overrides = [f"config=examples/baselines/{config}", f"model.model_path={model}", *profile.placement]
                overrides += [f"data.train_files={corpus or target_files(folders, train_file)}"]
                overrides += [f"loss.name={method}", f"data.retain_files={args.retain_files}"]
                if profile.name == "cpu":
                    overrides += ["model.dtype=fp32", "model.enable_gradient_checkpointing=false"]
                overrides += strength.train_args + smoke.get("baseline", [])
                pipe.train_rs(f"baseline {tag}", run_dir, overrides, point_epochs)
            if "eval" in stages or (run_dir / "summary.json").is_file():
                points = [(f"_epoch{e}", run_dir / f"epoch_{e}") for e in point_epochs]  # points: epochs
                for suffix, export in points or [("", pipe.export_of(run_dir))]:
                    pipe.evaluate(f"{method.upper()}/{strength.tag}{suffix}", tag + suffix, export, **evaluate)


MUSE_PROMPTS = ["data.apply_chat_template=false", "data.prompt_format=muse"]


def muse_data(args, profile: Profile, out: Path) -> tuple[Path, bool]:
    """(books folder, whether it is the embedded book that a model must be taught first)."""
    from data.download import fetch_muse_books

    if args.data_dir:
        return Path(fetch_muse_books(out / "data", local_dir=args.data_dir)).resolve(), False
    if profile.name == "gpu":
        return Path(fetch_muse_books(out / "data")).resolve(), False
    from data.embedded_muse import write_embedded_muse

    root = out / "data" / "muse_book"
    if not (root / "teach.json").is_file():
        write_embedded_muse(root, seed=0)
    return root.resolve(), True


def forget_corpus(root: Path, out: Path) -> Path:
    """The forget corpus for GA / NPO as ``{text}`` rows: ``train/forget.json`` (the embedded book), else the
    forget split's texts of PrivLeak (``privleak/forget.json``, the part of the books a download has)."""
    from verl.utils.fileio import write_json_atomic

    if (root / "train" / "forget.json").is_file():
        return root / "train" / "forget.json"
    path = out / "data" / "muse_forget_corpus.json"
    if not path.is_file():
        texts = json.loads((root / "privleak" / "forget.json").read_text())
        write_json_atomic(path, [{"text": t} for t in texts])
    return path


def privleak_reference(pipe: Pipeline, untaught: str, evaluate: dict, run: bool) -> list[str]:
    """``--privleak-auc-retrain`` from the untaught model's PrivLeak AUC on the embedded book.

    MUSE's reference is a model retrained without the forget split (AUC 0.5393 on MUSE-Books); the model before
    teaching has seen neither the forget nor the holdout split, so it plays that role for the embedded book."""
    pipe.evaluate("untaught", "untaught", untaught, **{**evaluate, "suites": ["muse_privleak"]}, run=run, record=False)
    path = pipe.out / "eval" / "untaught" / "muse_books.json"
    if not path.is_file():  # a dry run, or the base stage not selected yet
        print("[muse] no untaught-model PrivLeak AUC yet: PrivLeak uses MUSE-Books' published 0.5393", flush=True)
        return []
    return ["--privleak-auc-retrain", repr(json.loads(path.read_text())["metrics"]["muse_privleak_auc"])]


def run_muse(args, profile: Profile, stages: set[str]) -> Pipeline:
    out = Path(args.out)
    root, embedded = muse_data(args, profile, out)
    pipe = Pipeline(out, dry_run=args.dry_run)
    smoke = SMOKE if args.smoke else {}
    suites = profile.suites.split(",")
    epochs = [1] if args.smoke else [int(e) for e in profile.rs_epochs.split(",")]
    model = args.model or profile.model
    evaluate = dict(suites=suites, args=[*profile.eval_args, "--data-dir", str(root), *smoke.get("eval", [])],
                    benchmark="muse", names=["muse_books"])  # fmt: skip
    if embedded:  # the model before unlearning knows the book, as MUSE's target model does
        evaluate["args"] += privleak_reference(pipe, model, evaluate, run="base" in stages)
        teach = out / "teach"
        if "base" in stages:
            overrides = ["config=examples/muse_teach_smollm2.yaml", f"model.model_path={model}", *profile.placement]
            pipe.train_rs(
                "teach the book", teach, [*overrides, f"data.train_files={root / 'teach.json'}", *smoke.get("rs", [])]
            )
        model = str(pipe.export_of(teach))
    icl = [f"data.icl_file={root / 'knowmem' / 'train_qa_icl.json'}"]
    pipe.evaluate("before", "base", model, run="base" in stages, **evaluate)
    evaluate["run"] = "eval" in stages
    if "rs" in stages:
        overrides = [f"config={profile.rs_config}", f"model.model_path={model}", *profile.placement, *MUSE_PROMPTS]
        overrides += [*icl, f"data.train_files={root / 'reject_target_0.5.json'}", "data.max_length=640"]
        pipe.train_rs("rs", out / "rs", overrides + smoke.get("rs", []), epochs)
    for epoch in epochs:
        start = out / "rs" / f"epoch_{epoch}"
        pipe.evaluate(f"RULE/RS-epoch{epoch}", f"rs_epoch{epoch}", start, **evaluate)
        if "rebo" in stages:
            need(pipe, start, "rs")
            overrides = [f"config={profile.rebo_config}", f"worker.actor.model.model_path={start}", *profile.placement]
            overrides += [f"data.train_files={root / 'rl_rejection_with_neighbor.json'}", *MUSE_PROMPTS, *icl]
            overrides += [f"data.val_files={root / 'rl_rejection_eval_target.json'}", "evaluator.benchmark=muse"]
            overrides += ["worker.reward.reward_function=forget_two_stage_abs", f"evaluator.data_dir={root}"]
            overrides += ["evaluator.targets=", "evaluator.suites=[muse_knowmem]", "evaluator.best_metric="]
            pipe.train_rebo(f"rebo from RS epoch {epoch}", out / f"rebo_rs{epoch}", overrides + smoke.get("rebo", []))
        pipe.evaluate(f"RULE/RS-epoch{epoch}+ReBO", f"rule_rs{epoch}", out / f"rebo_rs{epoch}" / "final", **evaluate)
    corpus = str(forget_corpus(root, out)) if "baselines" in stages else None
    run_baselines(args, profile, stages, pipe, out, model, [], evaluate, smoke, corpus)
    return pipe


def absolutize(args) -> None:
    """Paths the user gave relative to their folder stay valid after the runner moves to the repository."""
    for key in ("out", "data_dir", "rs_config", "rebo_config"):
        value = getattr(args, key, None)
        if value and (key in ("out", "data_dir") or os.path.exists(value)):
            setattr(args, key, os.path.abspath(value))
    if args.model and args.model.startswith("tiny:"):
        args.model = "tiny:" + os.path.abspath(args.model[len("tiny:") :])
    elif args.model and os.path.exists(args.model):
        args.model = os.path.abspath(args.model)
    args.retain_files = ",".join(
        os.path.abspath(f) if os.path.exists(f) else f for f in args.retain_files.split(",") if f
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("rwku", "muse"):
        print("usage: python -m RS.runner {rwku,muse} [options] (see --help)", file=sys.stderr)
        return 2
    benchmark = argv.pop(0)
    args = build_parser(benchmark).parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    absolutize(args)
    os.chdir(REPO)  # the example configs' relative paths
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    unknown = stages - set(STAGES)
    if unknown:
        print(f"error: --stages: unknown {sorted(unknown)}; choose from {','.join(STAGES)}", file=sys.stderr)
        return 2
    profile = make_profile(benchmark, args.gpus)
    for key in ("model", "rs_config", "rebo_config", "rs_epochs", "suites", "baselines"):
        if getattr(args, key, None):
            setattr(profile, key, getattr(args, key))
    profile.eval_args += ["--refusal-detector", args.refusal_detector]
    profile.eval_args += ["--judge-model", args.judge_model] if args.judge_model else []
    print(f"[{benchmark}] {profile.describe()}{' (smoke)' if args.smoke else ''}", flush=True)
    try:
        if benchmark == "rwku":
            pipe = run_rwku(args, profile, stages)
        else:
            pipe = run_muse(args, profile, stages)
        if "table" in stages and not args.dry_run:
            pipe.table(reference="before", refusal_detector=args.refusal_detector)
    except (StageError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
