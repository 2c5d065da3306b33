"""verl.workers.rollout.texts: left padding and the prompt-length limit."""

import pytest

from verl.workers.rollout.texts import encode_left_padded


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from verl.utils.models import save_tiny_model_dir

    return AutoTokenizer.from_pretrained(save_tiny_model_dir(tmp_path_factory.mktemp("texts") / "tiny"))


def test_left_padding_and_a_named_length_limit(tiny_tokenizer):
    texts = ["a b c d e f", "a"]
    ids, mask = encode_left_padded(tiny_tokenizer, texts)
    lengths = [len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert mask.sum(1).tolist() == lengths and ids.shape[1] == max(lengths)
    assert mask[1, : ids.shape[1] - lengths[1]].sum() == 0  # the pad sits on the left
    assert (ids[1, : ids.shape[1] - lengths[1]] == tiny_tokenizer.pad_token_id).all()
    with pytest.raises(ValueError, match=rf"prompt 0 has {lengths[0]} tokens > synthesis.max_prompt_length=2"):
        encode_left_padded(tiny_tokenizer, texts, 2, "synthesis.max_prompt_length")
    assert encode_left_padded(tiny_tokenizer, texts, max(lengths))[0].shape == ids.shape
