"""The bench's summary: per-phase means after the warm-up step, compute floors and the markdown report."""

from __future__ import annotations

from verl.utils.flops import phase_floor_seconds

PHASES = ("gen", "reward", "old_log_prob", "ref", "adv", "update_actor", "other")


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
