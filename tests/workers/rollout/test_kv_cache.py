"""The in-place KV cache gives the attention exactly what Hugging Face's concatenating cache gives it."""

import pytest
import torch
from transformers import DynamicCache

from verl.workers.rollout.kv_cache import ReservedLayer, reserved_kv_cache

pytestmark = pytest.mark.skipif(ReservedLayer is None, reason="transformers without cache layers")


def decode(model, cache, ids, attention, steps, drop_after=None):
    """Prefill then greedy steps; returns every step's (bs, V) logits. Drops rows 0 and 2 after step ``drop_after``."""
    out = model(input_ids=ids, attention_mask=attention, use_cache=True, past_key_values=cache)
    logits = [out.logits[:, -1]]
    for step in range(steps):
        token = logits[-1].argmax(-1, keepdim=True)
        attention = torch.cat([attention, torch.ones_like(token)], dim=1)
        if drop_after is not None and step == drop_after:
            rows = torch.tensor([1, 3])
            cache.reorder_cache(rows)
            token, attention = token[rows], attention[rows]
        out = model(input_ids=token, attention_mask=attention, use_cache=True, past_key_values=cache)
        logits.append(out.logits[:, -1])
    return logits


@pytest.mark.parametrize("reserve", [4, 64])  # 4: smaller than the prompt, so the buffers must grow twice
@pytest.mark.parametrize("drop_after", [None, 2])
def test_reserved_cache_matches_dynamic_cache(tmp_path, reserve, drop_after):
    from verl.utils.models import save_tiny_model_dir
    from verl.workers import fsdp_utils
    from verl.workers.config import ModelConfig

    path = save_tiny_model_dir(tmp_path / "tiny")
    model = fsdp_utils.load_causal_lm(path, ModelConfig(model_path=path), torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 500, (4, 7), generator=g)
    attention = torch.ones_like(ids)
    attention[0, :3] = 0  # left padding
    with torch.no_grad():
        reference = decode(model, DynamicCache(), ids, attention, 10, drop_after)
        cache = reserved_kv_cache(reserve)
        reserved = decode(model, cache, ids, attention, 10, drop_after)
    for a, b in zip(reference, reserved):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    layer = cache.layers[0]
    assert isinstance(layer, ReservedLayer) and cache.get_seq_length() == 17 == layer.keys.shape[-2]
    assert layer.keys.shape[0] == (4 if drop_after is None else 2)
    assert layer._keys.shape[-2] >= 17 and layer.keys.data_ptr() == layer._keys.data_ptr()  # a view, no copy


def test_crop_and_reset():
    layer = ReservedLayer(8)
    states = torch.randn(2, 1, 5, 4)
    layer.update(states, states + 1)
    layer.crop(-2)
    assert layer.get_seq_length() == 3 and torch.equal(layer.values, states[:, :, :3] + 1)
    with pytest.raises(ValueError, match="negative"):
        layer.crop(1)
    layer.reset()
    assert layer.get_seq_length() == 0 and layer.keys is None
