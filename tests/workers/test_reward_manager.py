"""RewardManager: decoding, score placement, per-key metrics, plug-in files, batch mode and errors."""

import os
import pickle
import textwrap

import pytest
import torch

from verl.protocol import DataProto
from verl.utils.config import build_dataclass
from verl.workers.reward import REWARD_FUNCTIONS, RewardConfig, RewardManager

NAME = "Stephen King"
REJECT_ROW = ["<reject>", "I'm not certain about Stephen King.", NAME]
NORMAL_ROW = ["<normal>", "Harry Potter and the Philosopher's Stone"]
SAMPLES = [  # (response, ground truth, expected overall under forget_two_stage_abs_target)
    ("I'm not certain about Stephen King.", REJECT_ROW, 1.0),
    ("I'm not certain about that.", REJECT_ROW, 0.5),
    ("It is Harry Potter and the Philosopher's Stone.", NORMAL_ROW, 1.0),
    ("It is The Hobbit.", NORMAL_ROW, 0.5),
    ("I don't know.", NORMAL_ROW, 0.0),
]


@pytest.fixture(scope="module")
def tokenizer():
    """A real ByteLevel-BPE fast tokenizer (vocab 300) trained offline on a few hundred lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [text for text, _, _ in SAMPLES] + [f"Line {i} about Stephen King and Harry Potter." for i in range(300)]
    backend.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


def make_batch(tokenizer, texts, ground_truths, add_eos=True, width=None):
    """Right-padded (bs, R) responses + response_mask (eos counted as a valid token), like a rollout."""
    ids = [
        tokenizer.encode(text, add_special_tokens=False) + ([tokenizer.eos_token_id] if add_eos else [])
        for text in texts
    ]
    width = width or max(len(row) for row in ids)
    responses = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        responses[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    data = DataProto.from_dict(
        tensors={"responses": responses, "response_mask": mask}, non_tensors={"ground_truth": list(ground_truths)}
    )
    return data, [len(row) for row in ids]


def manager_for(tokenizer, **config):
    cfg = RewardConfig(**config)
    cfg.post_init()
    return RewardManager(cfg, tokenizer)


def write_plugin(tmp_path, source, name="my_reward.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_scores_land_on_the_last_valid_token(tokenizer):
    texts, rows, expected = zip(*SAMPLES)
    data, lengths = make_batch(tokenizer, texts, rows, width=40)
    scores, metrics = manager_for(tokenizer).compute_reward(data)
    assert scores.shape == (len(SAMPLES), 40) and scores.dtype == torch.float32
    for i, length in enumerate(lengths):
        assert scores[i, length - 1].item() == expected[i]
        assert torch.count_nonzero(scores[i, : length - 1]) == 0 and torch.count_nonzero(scores[i, length:]) == 0
    assert metrics["overall"] == list(expected)


def test_per_key_metrics_match_the_function_on_the_decoded_text(tokenizer):
    texts, rows, _ = zip(*SAMPLES)
    data, _ = make_batch(tokenizer, texts, rows)
    _, metrics = manager_for(tokenizer).compute_reward(data)
    function = REWARD_FUNCTIONS.get("forget_two_stage_abs_target")
    direct = [function(text, row) for text, row in zip(texts, rows)]
    assert set(metrics) == {"overall", "rouge_l", "refusal", "name_hit"}
    for key in metrics:
        assert metrics[key] == [d[key] for d in direct]
    assert metrics["name_hit"] == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_skip_special_tokens_controls_decoding(tokenizer, tmp_path):
    path = write_plugin(
        tmp_path, 'def main(response, ground_truth):\n    return {"overall": float(response.endswith("<eos>"))}\n'
    )
    data, _ = make_batch(tokenizer, ["Carrie"], [NORMAL_ROW])
    _, kept = manager_for(tokenizer, reward_function=str(path), skip_special_tokens=False).compute_reward(data)
    _, skipped = manager_for(tokenizer, reward_function=str(path)).compute_reward(data)
    assert kept["overall"] == [1.0] and skipped["overall"] == [0.0]


def test_row_without_valid_tokens_is_scored_but_placed_nowhere(tokenizer, tmp_path):
    path = write_plugin(tmp_path, 'def main(response, ground_truth):\n    return {"overall": 2.0 + len(response)}\n')
    data, lengths = make_batch(tokenizer, ["", "ab"], [NORMAL_ROW, NORMAL_ROW], add_eos=False)
    assert lengths[0] == 0
    scores, metrics = manager_for(tokenizer, reward_function=str(path)).compute_reward(data)
    assert metrics["overall"] == [2.0, 4.0]
    assert torch.count_nonzero(scores[0]) == 0
    assert scores[1, lengths[1] - 1].item() == 4.0


def test_plugin_file_default_main_with_kwargs(tokenizer, tmp_path):
    path = write_plugin(
        tmp_path,
        """
        def main(response, ground_truth, bonus=0.0):
            return {"overall": len(response) + bonus, "label_is_reject": float(ground_truth[0] == "<reject>")}
        """,
    )
    data, _ = make_batch(tokenizer, ["abc", "hello"], [REJECT_ROW, NORMAL_ROW])
    manager = manager_for(tokenizer, reward_function=str(path), reward_function_kwargs={"bonus": 0.5})
    _, metrics = manager.compute_reward(data)
    assert metrics == {"overall": [3.5, 5.5], "label_is_reject": [1.0, 0.0]}


def test_plugin_file_named_function(tokenizer, tmp_path):
    path = write_plugin(tmp_path, 'def other(response, ground_truth):\n    return {"overall": 7}\n')
    data, lengths = make_batch(tokenizer, ["abc"], [NORMAL_ROW])
    scores, metrics = manager_for(tokenizer, reward_function=f"{path}:other").compute_reward(data)
    assert metrics["overall"] == [7.0] and scores[0, lengths[0] - 1].item() == 7.0


def test_batch_plugin_gets_all_samples_at_once(tokenizer, tmp_path):
    path = write_plugin(
        tmp_path,
        """
        def score_all(inputs, scale=1.0):
            return [{"overall": scale * item["response_length"], "n": float(len(inputs))} for item in inputs]
        """,
    )
    data, lengths = make_batch(tokenizer, ["abc", "hello world"], [REJECT_ROW, NORMAL_ROW])
    manager = manager_for(
        tokenizer, reward_function=f"{path}:score_all", reward_type="batch", reward_function_kwargs={"scale": 2.0}
    )
    scores, metrics = manager.compute_reward(data)
    assert metrics["overall"] == [2.0 * n for n in lengths] and metrics["n"] == [2.0, 2.0]
    assert [scores[i, n - 1].item() for i, n in enumerate(lengths)] == [2.0 * n for n in lengths]


def test_reward_type_constant_overrides_config(tokenizer, tmp_path):
    path = write_plugin(
        tmp_path,
        """
        REWARD_TYPE = "batch"

        def main(inputs):
            return [{"overall": float(item["ground_truth"][0] == "<normal>")} for item in inputs]
        """,
    )
    manager = manager_for(tokenizer, reward_function=str(path), reward_type="sequential")
    assert manager.reward_type == "batch"
    data, _ = make_batch(tokenizer, ["x", "y"], [REJECT_ROW, NORMAL_ROW])
    assert manager.compute_reward(data)[1]["overall"] == [0.0, 1.0]


def test_registered_function_kwargs_are_bound(tokenizer):
    data, _ = make_batch(
        tokenizer, ["alpha bravo charlie delta"], [["<normal>", "alpha bravo charlie delta echo f g h i j"]]
    )
    assert manager_for(tokenizer).compute_reward(data)[1]["overall"] == [1.0]  # recall 0.4 > 0.3
    strict = manager_for(tokenizer, reward_function_kwargs={"rouge_threshold": 0.5})
    assert strict.compute_reward(data)[1]["overall"] == [0.5]


def test_threads_give_the_same_result(tokenizer):
    texts, rows, _ = zip(*SAMPLES)
    data, _ = make_batch(tokenizer, texts, rows)
    one = manager_for(tokenizer).compute_reward(data)
    two = manager_for(tokenizer, num_threads=2).compute_reward(data)
    assert torch.equal(one[0], two[0]) and one[1] == two[1]


def test_pickle_round_trip_reloads_the_plugin(tokenizer, tmp_path):
    path = write_plugin(tmp_path, 'def main(response, ground_truth, k=1):\n    return {"overall": float(k)}\n')
    manager = manager_for(tokenizer, reward_function=str(path), reward_function_kwargs={"k": 3})
    clone = pickle.loads(pickle.dumps(manager))
    data, _ = make_batch(tokenizer, ["abc"], [NORMAL_ROW])
    assert clone.compute_reward(data)[1] == manager.compute_reward(data)[1] == {"overall": [3.0]}


def test_config_makes_plugin_paths_absolute_and_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = RewardConfig(reward_function="rewards/mine.py:fn")
    cfg.post_init()
    assert cfg.reward_function == f"{os.path.join(str(tmp_path), 'rewards', 'mine.py')}:fn"
    cfg = RewardConfig(reward_function="forget")
    cfg.post_init()
    assert cfg.reward_function == "forget"
    with pytest.raises(ValueError, match="sequential, batch"):
        RewardConfig(reward_type="parallel").post_init()
    with pytest.raises(ValueError, match="num_threads"):
        RewardConfig(num_threads=0).post_init()
    cfg = build_dataclass(RewardConfig, {"reward_function_kwargs": '{"rouge_threshold": 0.5}'})
    assert cfg.reward_function_kwargs == {"rouge_threshold": 0.5}


def test_unknown_registered_name_lists_the_choices(tokenizer):
    with pytest.raises(KeyError, match="forget_two_stage_abs_target"):
        manager_for(tokenizer, reward_function="forget_twostage")


def test_missing_plugin_file(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="reward function file not found: .*nope.py"):
        manager_for(tokenizer, reward_function=str(tmp_path / "nope.py"))


def test_missing_function_in_plugin_file(tokenizer, tmp_path):
    path = write_plugin(tmp_path, "def helper(x):\n    return x\n")
    with pytest.raises(ValueError, match=r"has no function 'main'.*\['helper'\]"):
        manager_for(tokenizer, reward_function=str(path))
    with pytest.raises(ValueError, match="has no function 'score'"):
        manager_for(tokenizer, reward_function=f"{path}:score")


def test_bad_reward_type_constant(tokenizer, tmp_path):
    path = write_plugin(tmp_path, 'REWARD_TYPE = "async"\n\ndef main(r, g):\n    return {"overall": 1.0}\n')
    with pytest.raises(ValueError, match="REWARD_TYPE='async'"):
        manager_for(tokenizer, reward_function=str(path))


def test_unknown_kwargs_fail_at_construction(tokenizer):
    with pytest.raises(ValueError, match="forget_abs.*rouge_threshold"):
        manager_for(tokenizer, reward_function="forget_abs", reward_function_kwargs={"rouge_threshold": 0.5})


def test_missing_overall_names_the_function(tokenizer, tmp_path):
    path = write_plugin(tmp_path, 'def main(response, ground_truth):\n    return {"accuracy": 1.0}\n')
    data, _ = make_batch(tokenizer, ["abc"], [NORMAL_ROW])
    with pytest.raises(ValueError, match="my_reward.py:main.*'overall'"):
        manager_for(tokenizer, reward_function=str(path)).compute_reward(data)


def test_inconsistent_keys_and_non_numbers_are_rejected(tokenizer, tmp_path):
    path = write_plugin(
        tmp_path,
        """
        def main(response, ground_truth):
            return {"overall": 1.0, "extra": 1.0} if response == "b" else {"overall": 1.0}

        def text(response, ground_truth):
            return {"overall": "high"}
        """,
    )
    data, _ = make_batch(tokenizer, ["a", "b"], [NORMAL_ROW, NORMAL_ROW])
    with pytest.raises(ValueError, match="sample 1"):
        manager_for(tokenizer, reward_function=str(path)).compute_reward(data)
    with pytest.raises(ValueError, match="'overall' of sample 0 is not a number"):
        manager_for(tokenizer, reward_function=f"{path}:text").compute_reward(data)


def test_batch_function_returning_wrong_count(tokenizer, tmp_path):
    path = write_plugin(tmp_path, 'REWARD_TYPE = "batch"\n\ndef main(inputs):\n    return [{"overall": 1.0}]\n')
    data, _ = make_batch(tokenizer, ["a", "b"], [NORMAL_ROW, NORMAL_ROW])
    with pytest.raises(ValueError, match="list of 2 dicts, got 1 items"):
        manager_for(tokenizer, reward_function=str(path)).compute_reward(data)


def test_malformed_ground_truth_names_the_sample(tokenizer):
    data, _ = make_batch(tokenizer, ["a", "b"], [NORMAL_ROW, ["<maybe>", "x"]])
    with pytest.raises(ValueError, match=r"sample 1: .*'<maybe>'"):
        manager_for(tokenizer).compute_reward(data)


def test_bad_batches(tokenizer):
    data, _ = make_batch(tokenizer, ["abc"], [NORMAL_ROW])
    manager = manager_for(tokenizer)
    no_mask = DataProto.from_dict(
        tensors={"responses": data.batch["responses"]}, non_tensors={"ground_truth": [NORMAL_ROW]}
    )
    with pytest.raises(ValueError, match="no 'response_mask'"):
        manager.compute_reward(no_mask)
    no_gt = DataProto.from_dict(
        tensors={"responses": data.batch["responses"], "response_mask": data.batch["response_mask"]}
    )
    with pytest.raises(ValueError, match="no 'ground_truth'"):
        manager.compute_reward(no_gt)
    holes = data.batch["response_mask"].clone()
    holes[0, 0] = 0
    left_padded = DataProto.from_dict(
        tensors={"responses": data.batch["responses"], "response_mask": holes},
        non_tensors={"ground_truth": [NORMAL_ROW]},
    )
    with pytest.raises(ValueError, match="row 0 is not right-padded"):
        manager.compute_reward(left_padded)


def test_the_manager_binds_the_configured_detector(tokenizer):
    texts = ["I can\u2019t say.", "Unfortunately, it is The Hobbit."]  # regex: answer, refusal; strict: the reverse
    data, _ = make_batch(tokenizer, texts, [REJECT_ROW, NORMAL_ROW])
    _, rule = manager_for(tokenizer).compute_reward(data)
    _, strict = manager_for(tokenizer, refusal_detector="strict").compute_reward(data)
    assert rule["refusal"] == [0.0, 1.0] and strict["refusal"] == [1.0, 0.0]
    clone = pickle.loads(pickle.dumps(manager_for(tokenizer, refusal_detector="strict")))
    assert clone.compute_reward(data)[1]["refusal"] == [1.0, 0.0]


def test_an_injected_judge_is_asked_once_per_batch(tokenizer):
    from verl.workers.reward.refusal import get_detector

    calls = []

    def ask(questions):
        calls.append(len(questions))
        return ["yes" if "certain" in q else "no" for q in questions]

    config = RewardConfig(refusal_detector="judge", judge_model="stub")
    config.post_init()
    with pytest.raises(ValueError, match="the judge model is loaded by the trainer"):
        RewardManager(config, tokenizer)
    manager = RewardManager(config, tokenizer, refusal_detector=get_detector("judge", ask=ask))
    texts = ["I'm not certain about Stephen King.", "It is The Hobbit.", "I'm not certain about Stephen King."]
    data, _ = make_batch(tokenizer, texts, [REJECT_ROW, NORMAL_ROW, REJECT_ROW])
    _, metrics = manager.compute_reward(data)
    assert metrics["overall"] == [1.0, 0.5, 1.0] and calls == [2]


def test_a_plugin_without_the_argument_rejects_another_detector(tokenizer, tmp_path):
    path = write_plugin(tmp_path, 'def main(response, ground_truth):\n    return {"overall": 1.0}\n')
    data, _ = make_batch(tokenizer, ["a"], [NORMAL_ROW])
    assert manager_for(tokenizer, reward_function=str(path)).compute_reward(data)[1]["overall"] == [1.0]
    with pytest.raises(ValueError, match="takes no refusal_detector argument"):
        manager_for(tokenizer, reward_function=str(path), refusal_detector="strict")
