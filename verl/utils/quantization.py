"""Round-to-nearest (RTN) weight quantization, the computation behind the quantization attack on unlearning.

Zhang et al. (ICLR 2025, "Does your LLM truly unlearn? An embarrassingly simple approach to recover unlearned
knowledge") round an unlearned model's weights to 8 or 4 bits and find that much of the forgotten knowledge
comes back. :func:`rtn_quantize` is group-wise integer RTN in the form of the RTN baseline of the GPTQ / AWQ
papers ("w4 g128"; AWQ's ``pseudo_quantize_tensor``), fake-quantized (rounded, then mapped back to floats):

* the last dimension (a Linear layer's input features) is cut, per row, into groups of ``group_size``
  consecutive values (``-1``: one group per row); a shorter remainder group is its own group
  (SmolLM2's 576 input features = 4 groups of 128 + one of 64);
* asymmetric (default, zero point) over the group's range widened to include 0 (``min <= 0 <= max``, as
  GPTQ's quantizer does; AWQ's is the same for any group holding weights of both signs, as real weight
  groups do): ``scale = max(max - min, 1e-5) / (2^b - 1)``, ``zero = clamp(round(-min / scale), 0, 2^b - 1)``,
  ``q = clamp(round(w / scale) + zero, 0, 2^b - 1)``, ``w' = (q - zero) * scale``;
* symmetric (absmax): ``scale = max(max|w|, 1e-5) / (2^(b-1) - 1)``,
  ``q = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1)``, ``w' = q * scale``;
* computed in fp32 (``torch.round``: half to even), returned in the input dtype.

The paper's released code quantizes by loading the model through bitsandbytes (8-bit LLM.int8, 4-bit FP4 in
blocks of 64), which needs a CUDA build; this is the plain integer RTN, one code path on CPU and GPU.
:func:`quantize_linear_weights_` applies it in place to every ``nn.Linear`` weight except the output head
(``lm_head``; embeddings are not Linear layers and stay as they are), as GPTQ / AWQ do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

SCALE_FLOOR = 1e-5


def _rtn_rows(groups: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """(G, size) fp32 groups -> the same groups rounded to ``bits`` bits (one scale / zero point per row)."""
    if symmetric:
        max_int, min_int = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
        scales = groups.abs().amax(dim=1, keepdim=True).clamp(min=SCALE_FLOOR) / max_int
        return torch.clamp(torch.round(groups / scales), min_int, max_int) * scales
    max_int = 2**bits - 1
    max_val = groups.amax(dim=1, keepdim=True).clamp(min=0)
    min_val = groups.amin(dim=1, keepdim=True).clamp(max=0)
    scales = (max_val - min_val).clamp(min=SCALE_FLOOR) / max_int
    zeros = torch.clamp(-torch.round(min_val / scales), 0, max_int)
    return (torch.clamp(torch.round(groups / scales) + zeros, 0, max_int) - zeros) * scales


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int = 128, symmetric: bool = False) -> torch.Tensor:
    """``weight`` (..., C) rounded to ``bits`` bits in groups of ``group_size`` along C (module docstring).

    A new tensor of the same shape and dtype; ``weight`` is not changed.
    """
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"rtn_quantize: bits must be an integer in 2..16, got {bits!r}")
    if not isinstance(group_size, int) or (group_size < 1 and group_size != -1):
        raise ValueError(f"rtn_quantize: group_size must be a positive integer or -1 (per row), got {group_size!r}")
    if weight.dim() == 0 or weight.shape[-1] == 0:
        raise ValueError(f"rtn_quantize: expected a tensor with a non-empty last dimension, got {tuple(weight.shape)}")
    columns = weight.shape[-1]
    rows = weight.detach().float().reshape(-1, columns)  # (R, C)
    size = columns if group_size == -1 else min(group_size, columns)
    full = (columns // size) * size
    parts = []
    if full:
        parts.append(_rtn_rows(rows[:, :full].reshape(-1, size), bits, symmetric).reshape(rows.shape[0], full))
    if full < columns:
        parts.append(_rtn_rows(rows[:, full:], bits, symmetric))
    return torch.cat(parts, dim=1).reshape(weight.shape).to(weight.dtype)


def quantize_linear_weights_(
    model: nn.Module, bits: int, group_size: int = 128, symmetric: bool = False, skip: Sequence[str] = ("lm_head",)
) -> list[str]:
    """Replace, in place, the weight of every ``nn.Linear`` of ``model`` whose name's last part is not in
    ``skip`` by its :func:`rtn_quantize` rounding; returns the quantized modules' names (biases untouched)."""
    names = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] not in skip:
                module.weight.copy_(rtn_quantize(module.weight, bits, group_size, symmetric))
                names.append(name)
    if not names:
        raise ValueError(f"quantize_linear_weights_: {type(model).__name__} has no nn.Linear layer outside {skip}")
    return names
