"""``--plan``: read a model's config (no weights), estimate memory per phase, print a table and a verdict.

The entry points (``verl/trainer/main.py``, ``RS/train.py``) strip the flags with :func:`split_plan_flags`,
build a :class:`~verl.utils.memory_plan.TrainingSetup` from their config and call :func:`run_plan`.
Flags: ``--plan``, ``--gpu-mem-gb N`` (GiB per GPU, default 80), ``--model-config PATH`` (a config.json or
a folder holding one; needed when the model path is a hub id or a folder that does not exist here).
Exit status: 0 when every phase fits, 1 when not.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from verl.utils.memory_plan import GIB, MemoryPlan, ModelShape, TrainingSetup, estimate, suggestions

PARTS = ("parameters", "gathered", "gradients", "optimizer", "reference", "sync buffer", "rollout engine")
PARTS += ("activations", "logits", "runtime")


@dataclass(frozen=True)
class PlanFlags:
    gpu_mem_gb: float = 80.0
    model_config: Optional[str] = None


def split_plan_flags(argv: list[str]) -> tuple[list[str], Optional[PlanFlags]]:
    """(the other arguments, PlanFlags) when ``--plan`` is given, else (argv, None); a bad value exits."""
    rest, plan, values = [], False, {}
    it = iter(argv)
    for arg in it:
        if arg == "--plan":
            plan = True
        elif arg in ("--gpu-mem-gb", "--model-config"):
            value = next(it, None)
            if value is None:
                sys.exit(f"plan error: {arg} needs a value")
            values[arg] = value
        elif arg.startswith(("--gpu-mem-gb=", "--model-config=")):
            key, value = arg.split("=", 1)
            values[key] = value
        else:
            rest.append(arg)
    if values and not plan:
        sys.exit(f"plan error: {', '.join(values)} only work together with --plan")
    if not plan:
        return argv, None
    try:
        gpu = float(values.get("--gpu-mem-gb", 80.0))
    except ValueError:
        sys.exit(f"plan error: --gpu-mem-gb must be a number of GiB, got {values['--gpu-mem-gb']!r}")
    if gpu <= 0:
        sys.exit(f"plan error: --gpu-mem-gb must be > 0, got {gpu}")
    return rest, PlanFlags(gpu, values.get("--model-config"))


def find_model_config(model_path: str, override: Optional[str] = None) -> dict:
    """The config.json fields of ``override`` (file or folder) or of ``model_path`` (a local folder, a
    built 'tiny:DIR', the converted 'smollm2', or a hub id in the local HF cache). Never loads weights."""
    if override:
        path = Path(override).expanduser()
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"--model-config {override}: no config.json there")
        return json.loads(path.read_text())
    from verl.utils.models import EMBEDDED_NAMES, SMOLLM2_SUBDIR, default_cache_dir

    text = str(model_path)
    if text.lower() in EMBEDDED_NAMES:
        folder = default_cache_dir() / SMOLLM2_SUBDIR
    elif text.startswith("tiny:"):
        folder = Path(text[len("tiny:") :]).expanduser()
    else:
        folder = Path(text).expanduser()
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(text, local_files_only=True).to_dict()
    except (OSError, ValueError):
        pass
    raise FileNotFoundError(
        f"cannot read the config of model {text!r} offline (no {folder / 'config.json'}, not in the HF cache): "
        "pass --model-config PATH/config.json (e.g. tests/utils/llama3_8b_instruct_config.json)"
    )


def model_shape(fields: dict) -> ModelShape:
    """Exact parameter counts of the model built from ``fields`` on the meta device (no memory, no GPU)."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in fields.items() if not k.startswith("_") and k != "quantization_config"}
    if "model_type" not in fields:
        raise ValueError("model config has no 'model_type'")
    config = AutoConfig.for_model(**fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    layer_params = max(sum(p.numel() for p in layer.parameters()) for layer in layers)
    in_layers = sum(sum(p.numel() for p in layer.parameters()) for layer in layers)
    total = sum(p.numel() for p in model.parameters())
    linears = tuple(
        (name.rsplit(".", 1)[-1], m.in_features, m.out_features)
        for name, m in layers[0].named_modules()
        if isinstance(m, nn.Linear)
    )
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return ModelShape(
        name=f"{type(model).__name__}",
        num_params=total,
        largest_param=max(p.numel() for p in model.parameters()),
        layer_params=layer_params,
        root_params=total - in_layers,
        hidden=hidden,
        layers=len(layers),
        heads=heads,
        kv_dim=(getattr(config, "num_key_value_heads", None) or heads) * head_dim,
        intermediate=getattr(config, "intermediate_size", 4 * hidden),
        vocab=config.vocab_size,
        layer_linears=linears,
    )


def gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def format_plan(plan: MemoryPlan) -> str:
    """The per-phase table (GiB per GPU), the verdict and, when it does not fit, the knobs that would help."""
    s, shape = plan.setup, plan.shape
    lines = [
        f"memory plan: {shape.name}, {shape.num_params / 1e9:.2f} B parameters (largest tensor "
        f"{shape.largest_param / 1e6:.1f} M), on {s.n_gpus} x {s.gpu_bytes / GIB:.0f} GiB; GiB per GPU",
        "assumes: streaming weight sync (the largest tensor in fp32 + bf16 at a time); fp32 master weights; "
        "activations estimated (formula: verl/utils/memory_plan.py)",
    ]
    names = [p.name for p in plan.phases]
    parts = [k for k in PARTS if any(p.parts.get(k, 0) for p in plan.phases)]
    lines.append(f"{'':16}" + "".join(f"{n:>11}" for n in names))
    for part in parts:
        lines.append(f"{part:16}" + "".join(f"{gib(p.parts.get(part, 0)):>11}" for p in plan.phases))
    lines.append(f"{'total':16}" + "".join(f"{gib(p.total):>11}" for p in plan.phases))
    lines.append(f"{'fits':16}" + "".join(f"{'yes' if p.total <= s.gpu_bytes else 'NO':>11}" for p in plan.phases))
    lines += [f"note: {note}" for note in s.notes]
    peak = plan.peak
    if plan.fits:
        tight = (
            " - tight: over 90% of the card, allocator fragmentation may still OOM"
            if peak.total > 0.9 * s.gpu_bytes
            else ""
        )
        lines.append(f"verdict: FITS - peak {gib(peak.total)} of {gib(s.gpu_bytes)} GiB ({peak.name}){tight}")
        return "\n".join(lines)
    lines.append(f"verdict: DOES NOT FIT - {peak.name} needs {gib(peak.total)} of {gib(s.gpu_bytes)} GiB per GPU")
    options = suggestions(shape, s)
    if not options:
        lines.append("  no single knob helps: use larger GPUs or a smaller model")
    for o in options:
        if o.fits:
            status = f"fits (peak {gib(o.peak)} GiB)"
        elif o.gpus_needed:
            status = f"not alone (peak {gib(o.peak)} GiB); fits with {o.gpus_needed} GPUs"
        else:
            status = f"not alone (peak {gib(o.peak)} GiB)"
        lines.append(f"  try {o.text} [{o.key}]: {status}")
    return "\n".join(lines)


def run_plan(build: Callable[[float], TrainingSetup], model_path: str, flags: PlanFlags) -> None:
    """Print the plan for ``build(gpu_bytes)`` and exit (0 = fits, 1 = does not); one-line errors."""
    try:
        shape = model_shape(find_model_config(model_path, flags.model_config))
    except (FileNotFoundError, ValueError, KeyError) as e:
        sys.exit(f"plan error: {e}")
    plan = estimate(shape, build(flags.gpu_mem_gb * GIB))
    print(format_plan(plan))
    sys.exit(0 if plan.fits else 1)
