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
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # verl.utils.flops, when run as a script from anywhere
from verl.utils.flops import measure_matmul_peak, phase_floor_seconds  # noqa: E402

DEFAULT_DATA = "../shared/data/rwku/Target/1_Stephen_King/rl_rejection_with_fb_neighbor_target.json"
PHASES = ("gen", "reward", "old_log_prob", "ref", "adv", "update_actor", "other")
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
GB = 1e9
TRL_REPORTED = (
    "per_device_train_batch_size gradient_accumulation_steps generation_batch_size steps_per_generation "
    "num_generations max_completion_length beta loss_type learning_rate bf16 gradient_checkpointing use_vllm"
).split()


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


# ----------------------------------------------------------------------------- measuring a subprocess
class TreeSampler(threading.Thread):
    """Peak memory and a CPU-time timeline of a process and all its descendants.

    RSS counts shared pages (torch's libraries, Ray's shared-memory object store) once per process;
    PSS splits them between the processes that map them, so the PSS sum is the tree's real footprint.
    RSS is read every ``interval`` s (cheap); PSS needs smaps (~0.1 s for a few GB under load), so it is
    read at most once a second: on a new RSS peak, else every ``pss_every`` s. The process list is
    refreshed once a second. ``timeline`` holds (unix time, CPU seconds used so far by the whole tree);
    ``line_times`` the unix time at which each line of ``watch`` (a metrics.jsonl) appeared.
    """

    def __init__(self, pid: int, watch: Path | None = None, interval: float = 0.25, pss_every: float = 2.0):
        super().__init__(daemon=True)
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval, self.pss_every = interval, pss_every
        self.peak = {"rss_sum": 0, "pss_sum": 0, "max_process_rss": 0, "processes": 0}
        self._procs: list = [self.root]
        self._next_scan = self._last_pss = 0.0
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds; kept after the process exits
        self.timeline: list[tuple[float, float]] = []
        self.watch, self.line_times = watch, []
        self._done = threading.Event()

    def _total(self, read) -> tuple[int, int]:
        total = top = 0
        for proc in self._procs:
            try:
                value = read(proc)
            except self._psutil.Error:
                continue
            total, top = total + value, max(top, value)
        return total, top

    def _read_rss_and_cpu(self, proc) -> int:
        with proc.oneshot():
            cpu = proc.cpu_times()
            self._cpu[proc.pid] = cpu.user + cpu.system
            return proc.memory_info().rss

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds the tree used between two unix times (linear between samples)."""
        import numpy as np

        times, cpu = zip(*self.timeline) if self.timeline else ((0.0,), (0.0,))
        return float(np.interp(end, times, cpu) - np.interp(start, times, cpu))

    def sample(self) -> None:
        now = time.monotonic()
        if now >= self._next_scan:
            try:
                self._procs = [self.root, *self.root.children(recursive=True)]
            except self._psutil.Error:
                return
            self._next_scan = now + 1.0
        rss, top = self._total(self._read_rss_and_cpu)
        self.timeline.append((time.time(), sum(self._cpu.values())))
        if self.watch is not None and self.watch.exists():
            lines = self.watch.read_bytes().count(b"\n")
            self.line_times += [time.time()] * (lines - len(self.line_times))
        new_peak = rss > self.peak["rss_sum"]
        if new_peak:
            self.peak.update(rss_sum=rss, processes=len(self._procs))
        self.peak["max_process_rss"] = max(self.peak["max_process_rss"], top)
        since = now - self._last_pss
        if (new_peak and since >= 1.0) or since >= self.pss_every:
            self._last_pss = now
            self.peak["pss_sum"] = max(self.peak["pss_sum"], self._total(lambda p: p.memory_full_info().pss)[0])

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return {
            "peak_rss_gb": self.peak["rss_sum"] / GB,
            "peak_pss_gb": self.peak["pss_sum"] / GB,
            "peak_max_process_rss_gb": self.peak["max_process_rss"] / GB,
            "processes_at_peak": self.peak["processes"],
        }


def run_child(
    cmd: list[str], log_path: Path, env: dict[str, str], watch: Path | None = None
) -> tuple[dict, TreeSampler]:
    """Run ``cmd`` in the repo root with its output in ``log_path``, sampling its process tree."""
    print(f"running: {' '.join(cmd)}\n  log: {log_path}", flush=True)
    start, load_before = time.perf_counter(), os.getloadavg()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, watch)
        sampler.start()
        try:
            returncode = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            memory = sampler.stop()
    result = {"returncode": returncode, "wall_s": time.perf_counter() - start, "memory": memory, "log": str(log_path)}
    result.update(load_before=list(load_before), load_after=list(os.getloadavg()))
    if returncode != 0:
        result["error_tail"] = log_path.read_text(errors="replace")[-3000:]
        print(f"FAILED (exit {returncode}); end of {log_path}:\n{result['error_tail']}", file=sys.stderr)
    return result, sampler


def child_env() -> dict[str, str]:
    env = {**os.environ, **CHILD_ENV}
    env.pop("RAY_ADDRESS", None)  # always a fresh local Ray instance, so its processes are ours to measure
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# ----------------------------------------------------------------------------- our engine
def run_ours(args: argparse.Namespace, run_dir: Path, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "verl.trainer.main", f"config={args.config}", *engine_overrides(args, run_dir)]
    metrics_file = run_dir / "ours" / "metrics.jsonl"
    result, sampler = run_child(cmd, run_dir / "ours.log", env, watch=metrics_file)
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
    result, sampler = run_child(cmd, run_dir / "trl.log", env)
    if result_file.exists():
        result.update(json.loads(result_file.read_text()))
        for phases in result["steps"]:
            phases["cpu_s"] = sampler.cpu_between(phases.pop("begin"), phases.pop("end"))
    return result


def trl_child(args: argparse.Namespace) -> None:
    """Train ``args.steps`` GRPO steps with TRL on what the engine config describes; write timings as JSON."""
    import resource

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from verl.trainer.config import PPOConfig
    from verl.utils.config import load_config
    from verl.utils.dataset import PromptDataset, PromptDatasetSpec, PromptSampler, read_rows
    from verl.utils.flops import flop_shape, forward_flops
    from verl.utils.memory_plan_report import find_model_config
    from verl.workers.fsdp_utils import load_tokenizer, resolve_model_path
    from verl.workers.reward.functions import REWARD_FUNCTIONS

    torch.set_num_threads(args.threads)
    run_dir = Path(args.result).parent
    cfg = load_config(PPOConfig, [f"config={args.config}", *engine_overrides(args, run_dir)])
    data, actor, rollout = cfg.data, cfg.worker.actor, cfg.worker.rollout
    model_path = resolve_model_path(actor.model.model_path)
    tokenizer = load_tokenizer(actor.model.model_path)
    rows = read_rows(data.train_files)
    sampler = PromptSampler(len(rows), data.rollout_batch_size, data.shuffle, data.seed)  # the engine's order
    order = [i for _ in range(args.steps) for i in sampler.next_batch()]
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": rows[i][data.prompt_key]}], "solution": rows[i][data.answer_key]}
            for i in order
        ]
    )
    spec = PromptDatasetSpec(
        prompt_key=data.prompt_key,
        answer_key=data.answer_key,
        max_prompt_length=data.max_prompt_length,
        truncation=data.truncation,
        apply_chat_template=data.apply_chat_template,
        system_prompt=data.system_prompt,
    )
    engine_ids = PromptDataset(data.train_files, tokenizer, spec).prompt_ids
    expected_first_batch = {tuple(engine_ids[i]) for i in order[: data.rollout_batch_size]}

    score = REWARD_FUNCTIONS.get(cfg.worker.reward.reward_function)
    kwargs = dict(cfg.worker.reward.reward_function_kwargs or {})

    def rule_reward(completions, solution, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [score(text, truth, **kwargs)["overall"] for text, truth in zip(texts, solution)]

    sequences = data.rollout_batch_size * rollout.n
    micro = actor.micro_batch_size_per_device_for_update
    micro = micro if sequences % micro == 0 else sequences
    config = GRPOConfig(
        output_dir=str(run_dir / "trl"),
        max_steps=args.steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=sequences // micro,  # one optimizer step = one generation batch
        num_generations=rollout.n,
        max_completion_length=data.max_response_length,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=max(rollout.top_k, 0),
        learning_rate=actor.optim.lr,
        weight_decay=actor.optim.weight_decay,
        adam_beta1=actor.optim.betas[0],
        adam_beta2=actor.optim.betas[1],
        lr_scheduler_type="constant",
        max_grad_norm=actor.max_grad_norm,
        beta=0.0 if cfg.algorithm.disable_kl else cfg.algorithm.kl_coef,  # TRL's KL is k3 = low_var_kl, a loss
        epsilon=actor.clip_ratio_low,
        epsilon_high=actor.clip_ratio_high,
        loss_type="dapo",  # token mean over the whole step's tokens, as the engine's token-mean
        bf16=False,
        fp16=False,
        gradient_checkpointing=actor.model.enable_gradient_checkpointing,
        use_vllm=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        shuffle_dataset=False,  # rows are already in the engine's order
        seed=cfg.trainer.seed,
        use_cpu=True,
        model_init_kwargs={"dtype": "float32", "attn_implementation": actor.model.attn_implementation},
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    phase_times: dict[str, float] = {}

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps: list[dict[str, float]] = []
            self.logs: list[dict] = []

        def on_step_begin(self, *_, **__):
            phase_times.clear()
            self.start, self.begin = time.perf_counter(), time.time()

        def on_step_end(self, *_, **__):
            self.steps.append({**phase_times, "step": time.perf_counter() - self.start})
            self.steps[-1].update(begin=self.begin, end=time.time())

        def on_log(self, *_, logs=None, **__):
            self.logs.append(dict(logs or {}))

    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model_path,
        reward_funcs=rule_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )

    def timed(name, fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phase_times[name] = phase_times.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    seen_prompts: list[set] = []
    tokenize = trainer._tokenize_prompts

    def tokenize_and_record(prompts):
        out = tokenize(prompts)
        seen_prompts.append({tuple(ids) for ids in out[0]})
        return out

    logps = trainer._get_per_token_logps_and_entropies

    def timed_logps(model, *a, **kw):
        if torch.is_grad_enabled():  # the policy forward of the update itself
            return logps(model, *a, **kw)
        return timed("ref" if model is trainer.ref_model else "old_log_prob", logps)(model, *a, **kw)

    generated: list[tuple[list[int], int]] = []  # per _generate call: (sequence lengths, response tokens)
    generate = trainer._generate

    def generate_and_count(prompts):
        out = generate(prompts)
        prompt_ids, completion_ids = out[0], out[1]
        lens = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
        generated.append((lens, sum(len(c) for c in completion_ids)))
        return out

    trainer._tokenize_prompts = tokenize_and_record
    trainer._generate = timed("gen", generate_and_count)
    trainer._calculate_rewards = timed("reward", trainer._calculate_rewards)
    trainer._generate_and_score_completions = timed("gen_and_score", trainer._generate_and_score_completions)
    trainer._get_per_token_logps_and_entropies = timed_logps
    trainer.train()

    shape = flop_shape(find_model_config(actor.model.model_path))
    steps = []
    for index, raw in enumerate(timer.steps):
        phases = {k: raw.get(k, 0.0) for k in ("gen", "reward", "old_log_prob", "ref")}
        if index < len(generated):  # one generation batch per optimizer step (gradient_accumulation_steps)
            phases["forward_flops"] = forward_flops(shape, *generated[index])
        scored = raw.get("gen_and_score", 0.0)
        phases["adv"] = scored - sum(phases.values())  # decoding, advantages, bookkeeping
        phases["update_actor"] = raw["step"] - scored  # micro-batch forward/backward, clip, AdamW
        phases["other"] = 0.0
        phases.update(step=raw["step"], begin=raw["begin"], end=raw["end"])
        steps.append(phases)
    result = {
        "steps": steps,
        "response_length": [log["completions/mean_length"] for log in timer.logs if "completions/mean_length" in log],
        "prompt_ids_match_engine": bool(seen_prompts) and seen_prompts[0] == expected_first_batch,
        "self_ru_maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
        "model_path": model_path,
        "trl_settings": {k: getattr(config, k) for k in TRL_REPORTED},
        "trl_ref_model_loaded": trainer.ref_model is not None,
    }
    from verl.utils.fileio import write_text_atomic

    write_text_atomic(args.result, json.dumps(result, indent=2))


# ----------------------------------------------------------------------------- report
def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else float("nan")


def summarize(side: dict) -> dict:
    """Warm-up (first step) and mean of the later steps, per phase; the warm-up alone if there is one step."""
    steps = side.get("steps") or []
    later = steps[1:] or steps
    return {
        "warmup": steps[0] if steps else {},
        "mean": {
            k: mean([s.get(k, float("nan")) for s in later]) for k in (*PHASES, "step", "cpu_s", "forward_flops")
        },
        "steps_averaged": len(later),
        "response_length_mean": mean(side.get("response_length") or []),
    }


FLOOR_PHASES = ("gen", "ref", "update_actor")
"""Phases with a compute floor here: both sides skip the old-log-prob pass (one on-policy update per batch)."""


def add_floors(side: dict, peak_flops: float) -> None:
    """Each phase's compute floor (``verl/utils/flops.py``) from this side's own mean token counts."""
    forward = side["summary"]["mean"].get("forward_flops", float("nan"))
    side["summary"]["floor"] = phase_floor_seconds(forward, peak_flops, ran=FLOOR_PHASES)


def markdown_report(result: dict) -> str:
    sides = {name: result[name] for name in ("ours", "trl") if name in result}
    settings, machine = result["settings"], result["machine"]
    lines = [f"# ReBO step: ours vs TRL GRPOTrainer ({settings['model']})", ""]
    lines.append(
        f"{settings['prompts']} prompts x {settings['n']} completions, max "
        f"{settings['response_length']} new tokens, fp32, {settings['threads']} torch threads, "
        f"backend {settings['backend']}; mean over steps 2..{settings['steps']} "
        f"(step 1 = warm-up). Load average before: {machine['load_before']}. "
        f"Measured fp32 matmul peak: {machine['matmul_peak_gflops']:.0f} GFLOP/s; floor = FLOPs of the phase "
        "(verl/utils/flops.py, each side's own token counts) / that peak."
    )
    header = "".join(f"{n} s | {n} share | {n} floor s | {n}/floor | " for n in sides)
    lines += ["", "| phase | " + header.rstrip(" |") + " |"]
    lines.append("|---|" + "---|---|---|---|" * len(sides))
    for phase in (*PHASES, "step"):
        cells = []
        for side in sides.values():
            mean_phases, floors = side["summary"]["mean"], side["summary"]["floor"]
            value = mean_phases.get(phase, float("nan"))
            share = value / mean_phases["step"] if mean_phases.get("step") else float("nan")
            floor = floors.get(phase)
            floor_cells = [f"{floor:.2f}", f"{ratio(value, floor):.2f}"] if floor else ["-", "-"]
            cells += [f"{value:.2f}", f"{100 * share:.0f}%", *floor_cells]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines += ["", "| | " + " | ".join(sides) + (" | ours/TRL |" if len(sides) == 2 else " |")]
    lines.append("|---|" + "---|" * (len(sides) + (len(sides) == 2)))
    rows = [
        ("mean step s (excl. warm-up)", lambda s: s["summary"]["mean"].get("step"), "ratio_step_time"),
        ("compute floor s (step)", lambda s: s["summary"]["floor"]["step"], None),
        ("step / floor", lambda s: ratio(s["summary"]["mean"].get("step"), s["summary"]["floor"]["step"]), None),
        ("forward TFLOP per step", lambda s: s["summary"]["mean"].get("forward_flops", float("nan")) / 1e12, None),
        ("warm-up step s", lambda s: s["summary"]["warmup"].get("step"), None),
        ("mean step CPU s (process tree, excl. warm-up)", lambda s: s["summary"]["mean"].get("cpu_s"), "ratio_cpu"),
        (
            "CPU use during steps (CPU s / wall s)",
            lambda s: ratio(s["summary"]["mean"].get("cpu_s"), s["summary"]["mean"].get("step")),
            None,
        ),
        ("peak RSS GB (process tree sum)", lambda s: s["memory"]["peak_rss_gb"], "ratio_peak_rss"),
        ("peak PSS GB (process tree sum)", lambda s: s["memory"]["peak_pss_gb"], "ratio_peak_pss"),
        ("largest single process RSS GB", lambda s: s["memory"]["peak_max_process_rss_gb"], None),
        ("mean response length (tokens)", lambda s: s["summary"]["response_length_mean"], None),
        ("wall s (incl. start-up)", lambda s: s["wall_s"], None),
    ]
    for label, get, ratio_key in rows:
        cells = [f"{get(s):.2f}" if get(s) is not None else "-" for s in sides.values()]
        if len(sides) == 2:
            cells.append(f"{result['ratios'][ratio_key]:.2f}" if ratio_key else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.trl_child:
        trl_child(args)
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
