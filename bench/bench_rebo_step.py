"""Time ReBO steps of this engine against TRL's ``GRPOTrainer`` on the same model, prompts and batch (fp32).

    python bench/bench_rebo_step.py                        # 3 steps each on the embedded SmolLM2-135M-Instruct
    python bench/bench_rebo_step.py --steps 2 --skip-trl --backend inprocess

Each side runs in its own subprocess; a thread here samples the memory and CPU time of that process and
all its descendants (the driver plus Ray's workers and services) every 0.25 s, so each step also gets the
CPU seconds it used (less sensitive than wall time to other jobs on a shared machine; Ray workers run at
nice 0 here, as the TRL process does). Both sides read one engine config
(``--config`` + the overrides below + ``--set``), so TRL gets the same lr, clip ratios, KL coefficient,
sampling and batch. The first step is reported separately as warm-up. Output: a markdown report on stdout
and ``{--out-dir}/rebo_step_<time>.{json,md}``; each side's log and run folder under ``rebo_step_<time>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # verl.utils.flops, when run as a script from anywhere
from bench.process_tree import run_child  # noqa: E402
from bench.rebo_report import add_floors, markdown_report, ratio, summarize  # noqa: E402
from verl.utils.flops import measure_matmul_peak  # noqa: E402

DEFAULT_DATA = "../shared/data/rwku/Target/1_Stephen_King/rl_rejection_with_fb_neighbor_target.json"
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_worker_niceness": "0",  # Ray runs workers at nice 15; on a shared machine that skews the comparison
    "PYTHONUNBUFFERED": "1",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="training steps per side; the first is the warm-up")
    p.add_argument("--model", default="smollm2", help="smollm2 (embedded), tiny:DIR, or an HF model folder")
    p.add_argument("--config", default="examples/rebo_smollm2.yaml", help="engine YAML, relative to the repo")
    p.add_argument("--data", default=DEFAULT_DATA, help="training prompts (relative to the repo root)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--n", type=int, default=4, help="completions per prompt")
    p.add_argument("--response-length", type=int, default=64, help="max new tokens per completion")
    p.add_argument("--lr", type=float, default=2e-6, help="learning rate (both sides)")
    p.add_argument("--kl-coef", type=float, default=0.01, help="KL coefficient, low_var_kl as a loss (TRL beta)")
    p.add_argument("--backend", default="ray", choices=["ray", "inprocess"], help="our engine's trainer.backend")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per side")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra engine override")
    p.add_argument("--skip-ours", action="store_true", help="do not run our engine")
    p.add_argument("--skip-trl", action="store_true", help="do not run TRL")
    p.add_argument("--out-dir", default="log/bench", help="where results go (relative to the repo root)")
    p.add_argument("--trl-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.prompts < 1 or args.n < 2:
        p.error("--steps and --prompts must be >= 1 and --n >= 2 (GRPO needs two completions per prompt)")
    return args


def engine_overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The engine's command line (after ``config=``); the TRL side derives its settings from the same."""
    return [
        f"worker.actor.model.model_path={args.model}",
        "worker.actor.model.dtype=fp32",
        f"data.train_files={args.data}",
        f"data.rollout_batch_size={args.prompts}",
        f"worker.actor.global_batch_size={args.prompts}",
        f"worker.rollout.n={args.n}",
        f"data.max_response_length={args.response_length}",
        "algorithm.adv_estimator=grpo",
        "algorithm.disable_kl=false",
        "algorithm.use_kl_loss=true",
        "algorithm.kl_penalty=low_var_kl",
        f"algorithm.kl_coef={args.kl_coef}",
        f"worker.actor.optim.lr={args.lr}",
        "worker.reward.reward_function=forget_two_stage_abs_target",
        f"worker.num_threads={args.threads}",
        f"trainer.backend={args.backend}",
        f"trainer.max_steps={args.steps}",
        f"trainer.output_dir={run_dir}",
        "trainer.experiment_name=ours",
        "trainer.logger=[jsonl]",
        "trainer.val_freq=-1",
        "trainer.val_before_train=false",
        "trainer.save_freq=-2",
        "trainer.export_hf=false",
        "trainer.resume=false",
        *args.set,
    ]


def child_env() -> dict[str, str]:
    env = {**os.environ, **CHILD_ENV}
    env.pop("RAY_ADDRESS", None)  # always a fresh local Ray instance, so its processes are ours to measure
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# ----------------------------------------------------------------------------- our engine
def run_ours(args: argparse.Namespace, run_dir: Path, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "verl.trainer.main", f"config={args.config}", *engine_overrides(args, run_dir)]
    metrics_file = run_dir / "ours" / "metrics.jsonl"
    result, sampler = run_child(cmd, run_dir / "ours.log", env, REPO, watch=metrics_file)
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.exists() else []
    result["steps"] = []
    for row, written in zip(rows, sampler.line_times):  # a row is written right after its step
        if "timing/step" in row:
            phases = ours_phases(row)
            phases["cpu_s"] = sampler.cpu_between(written - phases["step"], written)
            result["steps"].append(phases)
    rows = [row for row in rows if "timing/step" in row]
    result["response_length"] = [row.get("response_length/mean", float("nan")) for row in rows]
    result["metrics_file"] = str(metrics_file)
    return result


def ours_phases(row: dict[str, float]) -> dict[str, float]:
    """One metrics.jsonl row -> seconds per common phase; ``reward`` is the blocking part (submit + wait)."""
    t = {k.removeprefix("timing/"): v for k, v in row.items() if k.startswith("timing/")}
    phases = {
        "gen": t.get("gen", 0.0),
        "reward": t.get("reward", 0.0) + t.get("reward_wait", 0.0),
        "old_log_prob": t.get("old_log_prob", 0.0),
        "ref": t.get("ref", 0.0),
        "adv": t.get("adv", 0.0),
        "update_actor": t.get("update_actor", 0.0),
    }
    phases["other"] = t["step"] - sum(phases.values())
    phases["step"] = t["step"]
    if "perf/forward_flops" in row:
        phases["forward_flops"] = row["perf/forward_flops"]
    return phases


# ----------------------------------------------------------------------------- TRL (runs in a subprocess)
def run_trl(args: argparse.Namespace, run_dir: Path, env: dict[str, str], argv: list[str]) -> dict:
    result_file = run_dir / "trl_result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--trl-child", "--result", str(result_file)]
    result, sampler = run_child(cmd, run_dir / "trl.log", env, REPO)
    if result_file.exists():
        result.update(json.loads(result_file.read_text()))
        for phases in result["steps"]:
            phases["cpu_s"] = sampler.cpu_between(phases.pop("begin"), phases.pop("end"))
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.trl_child:
        from bench.trl_grpo import train_and_time

        train_and_time(args, engine_overrides(args, Path(args.result).parent))
        return 0
    if args.skip_ours and args.skip_trl:
        sys.exit("nothing to run: --skip-ours and --skip-trl were both given")
    from verl.utils.fileio import write_text_atomic

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = (REPO / args.out_dir).resolve()
    run_dir = out_dir / f"rebo_step_{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = child_env()
    settings = {k: v for k, v in vars(args).items() if k not in ("trl_child", "result")}
    result: dict = {"settings": settings, "machine": machine_info(), "run_dir": str(run_dir)}
    peak = measure_matmul_peak(args.threads)  # before the sides start: the machine as they find it
    result["machine"]["matmul_peak_gflops"] = peak / 1e9
    if not args.skip_ours:
        result["ours"] = run_ours(args, run_dir, env)
    if not args.skip_trl:
        result["trl"] = run_trl(args, run_dir, env, argv)
    for name in ("ours", "trl"):
        if name in result:
            result[name]["summary"] = summarize(result[name])
            add_floors(result[name], peak)
    if "ours" in result and "trl" in result:
        ours, trl = result["ours"], result["trl"]
        result["ratios"] = {
            "ratio_step_time": ratio(ours["summary"]["mean"].get("step"), trl["summary"]["mean"].get("step")),
            "ratio_cpu": ratio(ours["summary"]["mean"].get("cpu_s"), trl["summary"]["mean"].get("cpu_s")),
            "ratio_peak_rss": ratio(ours["memory"]["peak_rss_gb"], trl["memory"]["peak_rss_gb"]),
            "ratio_peak_pss": ratio(ours["memory"]["peak_pss_gb"], trl["memory"]["peak_pss_gb"]),
        }
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report = markdown_report(result)
    print(report)
    write_text_atomic(out_dir / f"rebo_step_{stamp}.json", json.dumps(result, indent=2, default=str))
    write_text_atomic(out_dir / f"rebo_step_{stamp}.md", report)
    print(f"wrote {out_dir / f'rebo_step_{stamp}.json'} and .md", flush=True)
    failed = [n for n in ("ours", "trl") if n in result and result[n]["returncode"] != 0]
    return 1 if failed else 0


def machine_info() -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "transformers", "trl", "ray"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    load = [round(x, 2) for x in os.getloadavg()]
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": load, "versions": versions}


if __name__ == "__main__":
    sys.exit(main())
