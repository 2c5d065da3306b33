import pytest
import torch

from verl.utils.flops import FlopShape, flop_shape, forward_flops, phase_floor_seconds

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 200,
    "tie_word_embeddings": True,
}


def test_flop_shape_counts_the_decoder_linears_by_hand():
    shape = flop_shape(LLAMA)
    h, ff, kv = 64, 96, 2 * 16  # head dim 64 / 4 = 16
    assert shape.layer_linear_params == h * h + 2 * h * kv + h * h + 3 * h * ff  # q, k, v, o, gate/up/down
    assert (shape.layers, shape.q_dim, shape.hidden, shape.vocab) == (3, 64, 64, 200)


def test_forward_flops_by_hand():
    shape = FlopShape(layer_linear_params=10, layers=2, q_dim=4, hidden=3, vocab=5)
    # lengths 2 and 3: 5 tokens, causal pairs 3 + 6 = 9, 4 logit positions
    expected = 2 * 2 * 10 * 5 + 4 * 2 * 4 * 9 + 2 * 3 * 5 * 4
    assert forward_flops(shape, [2, 3], 4) == expected


def test_forward_flops_match_torch_flop_counter_on_a_real_model():
    """The linears + LM head equal torch's count of a Llama forward's matmuls (all positions get logits).
    torch's counter does not count the CPU attention kernel; the attention term is checked by hand above."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**LLAMA), attn_implementation="sdpa").eval()
    bs, length = 2, 7
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=torch.randint(0, 200, (bs, length)))
    counts = counter.get_flop_counts()["Global"]
    attention = sum(v for op, v in counts.items() if "attention" in str(op))
    shape = flop_shape(LLAMA)
    ours = forward_flops(shape, [length] * bs, logit_positions=bs * length)
    ours_attention = 4 * shape.layers * shape.q_dim * bs * length * (length + 1) / 2
    assert sum(counts.values()) - attention == pytest.approx(ours - ours_attention, rel=1e-9)


def test_phase_floors_count_the_update_as_forward_plus_backward():
    floors = phase_floor_seconds(6e9, 2e9, ppo_epochs=2, ran=("gen", "ref", "update_actor"))
    assert floors == {"gen": 3.0, "old_log_prob": 0.0, "ref": 3.0, "update_actor": 18.0, "step": 24.0}
