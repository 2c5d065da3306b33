"""sequence_logps (LM head over the loss columns of a left-padded batch) against a naive per-row loop."""

import torch
from transformers import AutoModelForCausalLM

from RS.dataset import EncodeSpec, TokenizedStream, collate, encode_rows, encode_texts
from RS.worker import sequence_logps


def naive_logps(model, ids: list[int], mask: list[int]) -> tuple[float, float]:
    """One unpadded row: full-sequence logits, log-softmax, the loss tokens' log-probs summed."""
    x = torch.tensor([ids])
    logps = model(input_ids=x).logits[0, :-1].log_softmax(-1).gather(-1, x[0, 1:, None])[:, 0]
    weights = torch.tensor(mask[1:], dtype=logps.dtype)
    return float((logps * weights).sum()), float(weights.sum())


def test_sequence_logps_matches_unpadded_rows(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    spec = EncodeSpec(max_length=64)
    rows = [
        {"prompt": "who wrote the long book about the sea and the whale?", "response": "Ann"},
        {"prompt": "who?", "response": "Ann Lee wrote it in 1901, in Paris."},
        {"prompt": "where was she born, and when did she leave?", "response": "In Rome."},
    ]
    stream = encode_rows(tiny_tokenizer, rows, spec)
    text = encode_texts(tiny_tokenizer, ["a b c d e f g"], spec)  # every token a target
    stream.append(text.ids[0], text.loss_mask[0])
    stream.append(stream.ids[0], [0] * len(stream.ids[0]))  # no loss token at all
    batch = collate(stream, list(range(len(stream))), tiny_tokenizer.pad_token_id, "forget")
    with torch.no_grad():
        logps, ntokens = sequence_logps(model, batch, "forget")
        expected = [naive_logps(model, i, m) for i, m in zip(stream.ids, stream.loss_mask)]
    assert torch.allclose(logps, torch.tensor([e[0] for e in expected]), atol=1e-4)
    assert ntokens.tolist() == [e[1] for e in expected]
    assert logps[-1] == 0 and ntokens[-1] == 0


def test_sequence_logps_keeps_only_the_response_columns(tiny_model_dir, tiny_tokenizer):
    """The LM head sees the columns from the first loss token on, not the prompt (the saving)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    stream = TokenizedStream()
    stream.append(list(range(5, 25)), [0] * 17 + [1] * 3)
    stream.append(list(range(5, 15)), [0] * 8 + [1] * 2)
    seen = []
    hook = model.lm_head.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1]))
    with torch.no_grad():
        sequence_logps(model, collate(stream, [0, 1], tiny_tokenizer.pad_token_id, "forget"), "forget")
    hook.remove()
    assert seen == [3]  # exactly the 3 columns that predict loss tokens
