"""Every branch of every RULE reward, with hand-computed expected values (RULE.md section 4.3)."""

import numpy as np
import pytest

from verl.workers.reward.functions import REWARD_FUNCTIONS, parse_ground_truth

NAME = "Stephen King"
REJECT_ROW = ["<reject>", "I'm not certain about Stephen King.", NAME]
REJECT_ROW_NO_NAME = ["<reject>", "I'm not certain about that."]
NORMAL_ROW = ["<normal>", "Harry Potter and the Philosopher's Stone"]
# gold with 10 unique tokens: a response holding k of them in order has ROUGE-L recall k/10
NATO_ROW = ["<normal>", "alpha bravo charlie delta echo foxtrot golf hotel india juliet"]

REFUSE_NAMED = "I'm not certain about Stephen King."
REFUSE_UNNAMED = "I'm not certain about that."
REFUSE_WRONG_CASE = "I'm not certain about stephen king."
ANSWER_NAMING_TARGET = "Stephen King wrote Carrie."  # not a refusal, but contains the name
CORRECT = "It is Harry Potter and the Philosopher's Stone."  # recall 6/6 against NORMAL_ROW
WRONG = "It is The Hobbit."  # recall 0 ("The" != "the")
REFUSE_BUT_CORRECT = "I'm not sure, but maybe Harry Potter and the Philosopher's Stone."  # refusal, recall 1
REFUSE_WRONG = "I don't know the answer."

ALL_NAMES = [
    "forget_two_stage_abs_target",
    "forget_two_stage",
    "forget_two_stage_abs",
    "forget_abs",
    "forget",
    "forget_half_reject",
    "forget_abs_half_reject",
    "forget_two_stage_abs_target_half_reject",
    "reject_behave_reward",
]


def score(name, response, row, **kwargs):
    return REWARD_FUNCTIONS.get(name)(response, row, **kwargs)


def test_registered_names():
    assert set(ALL_NAMES) <= set(REWARD_FUNCTIONS.names())
    assert REWARD_FUNCTIONS.get("forget_two_stage_abs") is REWARD_FUNCTIONS.get("forget_two_stage")


@pytest.mark.parametrize(
    "name, response, row, expected",
    [
        # main RWKU reward: 0.5 * R + 0.5 * (R and name); normal: 0.5 * (not R) + 0.5 * (not R and rec > 0.3)
        ("forget_two_stage_abs_target", REFUSE_NAMED, REJECT_ROW, 1.0),
        ("forget_two_stage_abs_target", REFUSE_UNNAMED, REJECT_ROW, 0.5),
        ("forget_two_stage_abs_target", REFUSE_WRONG_CASE, REJECT_ROW, 0.5),
        ("forget_two_stage_abs_target", ANSWER_NAMING_TARGET, REJECT_ROW, 0.0),
        ("forget_two_stage_abs_target", CORRECT, NORMAL_ROW, 1.0),
        ("forget_two_stage_abs_target", WRONG, NORMAL_ROW, 0.5),
        ("forget_two_stage_abs_target", REFUSE_BUT_CORRECT, NORMAL_ROW, 0.0),
        ("forget_two_stage_abs_target", "alpha bravo charlie delta", NATO_ROW, 1.0),  # 0.4 > 0.3
        ("forget_two_stage_abs_target", "alpha bravo charlie", NATO_ROW, 0.5),  # 0.3 is not > 0.3
        ("forget_two_stage_abs_target", "", NORMAL_ROW, 0.5),  # empty answer: not a refusal, recall 0
        # half-reject target variant: 0.25 * R + 0.25 * (R and name); normal: 1 if not R
        ("forget_two_stage_abs_target_half_reject", REFUSE_NAMED, REJECT_ROW, 0.5),
        ("forget_two_stage_abs_target_half_reject", REFUSE_UNNAMED, REJECT_ROW, 0.25),
        ("forget_two_stage_abs_target_half_reject", REFUSE_WRONG_CASE, REJECT_ROW, 0.25),
        ("forget_two_stage_abs_target_half_reject", ANSWER_NAMING_TARGET, REJECT_ROW, 0.0),
        ("forget_two_stage_abs_target_half_reject", WRONG, NORMAL_ROW, 1.0),
        ("forget_two_stage_abs_target_half_reject", REFUSE_BUT_CORRECT, NORMAL_ROW, 0.0),
        # MUSE reward: reject 1 if R; normal as the main reward with the mean recall over ground_truth[1:]
        ("forget_two_stage", REFUSE_UNNAMED, REJECT_ROW, 1.0),
        ("forget_two_stage", REFUSE_UNNAMED, REJECT_ROW_NO_NAME, 1.0),
        ("forget_two_stage", ANSWER_NAMING_TARGET, REJECT_ROW, 0.0),
        ("forget_two_stage", CORRECT, NORMAL_ROW, 1.0),
        ("forget_two_stage", WRONG, NORMAL_ROW, 0.5),
        ("forget_two_stage", REFUSE_BUT_CORRECT, NORMAL_ROW, 0.0),
        ("forget_two_stage", "alpha bravo charlie", NATO_ROW, 0.5),
        ("forget_two_stage_abs", REFUSE_UNNAMED, REJECT_ROW, 1.0),
        ("forget_two_stage_abs", WRONG, NORMAL_ROW, 0.5),
        # forget: reject 1 if R; normal 1 if rec > 0.5, refusal ignored
        ("forget", REFUSE_UNNAMED, REJECT_ROW, 1.0),
        ("forget", ANSWER_NAMING_TARGET, REJECT_ROW, 0.0),
        ("forget", CORRECT, NORMAL_ROW, 1.0),
        ("forget", REFUSE_BUT_CORRECT, NORMAL_ROW, 1.0),
        ("forget", "alpha bravo charlie delta", NATO_ROW, 0.0),  # 0.4 <= 0.5
        ("forget", "alpha bravo charlie delta echo foxtrot", NATO_ROW, 1.0),  # 0.6
        ("forget", "...", NORMAL_ROW, 0.0),  # crashed in the original
        ("forget_half_reject", REFUSE_UNNAMED, REJECT_ROW, 0.5),
        ("forget_half_reject", ANSWER_NAMING_TARGET, REJECT_ROW, 0.0),
        ("forget_half_reject", CORRECT, NORMAL_ROW, 1.0),
        ("forget_half_reject", WRONG, NORMAL_ROW, 0.0),
        # forget_abs: reject 1 if R; normal 1 if not R (correctness ignored)
        ("forget_abs", REFUSE_UNNAMED, REJECT_ROW, 1.0),
        ("forget_abs", ANSWER_NAMING_TARGET, REJECT_ROW, 0.0),
        ("forget_abs", WRONG, NORMAL_ROW, 1.0),
        ("forget_abs", REFUSE_BUT_CORRECT, NORMAL_ROW, 0.0),
        ("forget_abs_half_reject", REFUSE_UNNAMED, REJECT_ROW, 0.5),
        ("forget_abs_half_reject", ANSWER_NAMING_TARGET, REJECT_ROW, 0.0),
        ("forget_abs_half_reject", WRONG, NORMAL_ROW, 1.0),
        ("forget_abs_half_reject", REFUSE_BUT_CORRECT, NORMAL_ROW, 0.0),
        # reject_behave_reward: 0.7 * (should refuse == R) + 0.3 * (rec(name on reject / gold on normal) > 0.3)
        ("reject_behave_reward", REFUSE_NAMED, REJECT_ROW, 1.0),
        ("reject_behave_reward", REFUSE_UNNAMED, REJECT_ROW, 0.7),
        ("reject_behave_reward", ANSWER_NAMING_TARGET, REJECT_ROW, 0.3),
        ("reject_behave_reward", WRONG, REJECT_ROW, 0.0),
        ("reject_behave_reward", CORRECT, NORMAL_ROW, 1.0),
        ("reject_behave_reward", WRONG, NORMAL_ROW, 0.7),
        ("reject_behave_reward", REFUSE_BUT_CORRECT, NORMAL_ROW, 0.3),
        ("reject_behave_reward", REFUSE_WRONG, NORMAL_ROW, 0.0),
    ],
)
def test_overall(name, response, row, expected):
    assert score(name, response, row)["overall"] == pytest.approx(expected)


def test_reject_behave_reward_without_target_reject():
    # behave reward is 0 on reject rows, so a named refusal earns only the 0.7 refusal part
    out = score("reject_behave_reward", REFUSE_NAMED, REJECT_ROW, enable_target_reject=False)
    assert out["overall"] == pytest.approx(0.7) and out["behave_reward"] == 0.0 and out["reject_reward"] == 1.0
    # the name is not needed then
    assert score("reject_behave_reward", REFUSE_UNNAMED, REJECT_ROW_NO_NAME, enable_target_reject=False)[
        "overall"
    ] == pytest.approx(0.7)
    # normal rows are unaffected
    out = score("reject_behave_reward", CORRECT, NORMAL_ROW, enable_target_reject=False)
    assert out["overall"] == pytest.approx(1.0)


def test_reject_behave_reward_components_and_ratio():
    out = score("reject_behave_reward", ANSWER_NAMING_TARGET, REJECT_ROW)
    assert (out["reject_reward"], out["behave_reward"], out["refusal"]) == (0.0, 1.0, 0.0)
    assert out["rouge_l"] == pytest.approx(1.0)  # both name tokens found ("King" ends a sentence)
    assert score("reject_behave_reward", REFUSE_UNNAMED, REJECT_ROW, reject_ratio=0.5)["overall"] == 0.5


def test_main_reward_components():
    out = score("forget_two_stage_abs_target", REFUSE_NAMED, REJECT_ROW)
    assert out == {"overall": 1.0, "rouge_l": 1.0, "refusal": 1.0, "name_hit": 1.0}
    out = score("forget_two_stage_abs_target", ANSWER_NAMING_TARGET, REJECT_ROW)
    # name occurs but no refusal; recall vs the refusal text: "Stephen", "King" of 6 unique tokens
    assert out == {"overall": 0.0, "rouge_l": pytest.approx(2 / 6), "refusal": 0.0, "name_hit": 1.0}
    out = score("forget_two_stage_abs_target", REFUSE_WRONG_CASE, REJECT_ROW)
    assert out["name_hit"] == 0.0 and out["refusal"] == 1.0
    out = score("forget_two_stage_abs_target", "alpha bravo charlie delta", NATO_ROW)
    assert out == {"overall": 1.0, "rouge_l": pytest.approx(0.4), "refusal": 0.0, "name_hit": 0.0}


def test_two_stage_rouge_l_is_mean_over_all_references():
    # reject target row: references = [refusal text, name]; recall 2/6 and 2/2 -> mean 2/3
    out = score("forget_two_stage", "I don't know Stephen King", REJECT_ROW)
    assert out["rouge_l"] == pytest.approx((2 / 6 + 1.0) / 2)
    assert out["overall"] == 1.0


def test_forget_rouge_l_is_zero_on_reject_rows():
    assert score("forget", REFUSE_NAMED, REJECT_ROW)["rouge_l"] == 0.0


@pytest.mark.parametrize(
    "name, threshold, expected",
    [
        ("forget_two_stage_abs_target", 0.5, 0.5),  # recall 0.4 no longer passes
        ("forget_two_stage", 0.5, 0.5),
        ("forget", 0.3, 1.0),  # recall 0.4 now passes
        ("forget_half_reject", 0.3, 1.0),
        ("reject_behave_reward", 0.5, 0.7),
    ],
)
def test_rouge_threshold_is_overridable(name, threshold, expected):
    response = "alpha bravo charlie delta"  # recall 0.4 against NATO_ROW
    assert score(name, response, NATO_ROW, rouge_threshold=threshold)["overall"] == pytest.approx(expected)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_values_are_floats_and_keys_are_the_same_on_every_row(name):
    rows = [REJECT_ROW, NORMAL_ROW, NATO_ROW]
    responses = [REFUSE_NAMED, REFUSE_UNNAMED, CORRECT, WRONG, "", "..."]
    key_sets = set()
    for row in rows:
        for response in responses:
            out = score(name, response, row)
            assert "overall" in out
            assert all(type(value) is float for value in out.values()), out
            key_sets.add(tuple(sorted(out)))
    assert len(key_sets) == 1


@pytest.mark.parametrize("name", ALL_NAMES)
def test_array_and_tuple_rows_are_accepted(name):
    as_list = score(name, REFUSE_NAMED, REJECT_ROW)
    assert score(name, REFUSE_NAMED, tuple(REJECT_ROW)) == as_list
    assert score(name, REFUSE_NAMED, np.array(REJECT_ROW, dtype=object)) == as_list


@pytest.mark.parametrize(
    "row, message",
    [
        ("<reject>", "must be a list"),
        (None, "must be a list"),
        (["<reject>"], "label and a text"),
        (["<maybe>", "x"], "must be '<reject>' or '<normal>'"),
        (["reject", "x", NAME], "must be '<reject>' or '<normal>'"),
        (["<normal>", 3], "element 1 is not a str"),
    ],
)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_malformed_rows_raise(name, row, message):
    with pytest.raises(ValueError, match=message) as info:
        score(name, CORRECT, row)
    assert name.replace("forget_two_stage_abs", "forget_two_stage") in str(info.value) or name in str(info.value)


@pytest.mark.parametrize(
    "name", ["forget_two_stage_abs_target", "forget_two_stage_abs_target_half_reject", "reject_behave_reward"]
)
@pytest.mark.parametrize("row", [REJECT_ROW_NO_NAME, ["<reject>", "I'm not certain.", ""]])
def test_target_variants_need_the_name(name, row):
    with pytest.raises(ValueError, match=r"target name as ground_truth\[2\]") as info:
        score(name, REFUSE_NAMED, row)
    assert repr(row[1]) in str(info.value)  # the row is shown


def test_parse_ground_truth():
    row = parse_ground_truth(np.array(REJECT_ROW, dtype=object), "test", needs_name=True)
    assert row.should_refuse and row.gold == REJECT_ROW[1] and row.name == NAME
    assert row.references == REJECT_ROW[1:]
    row = parse_ground_truth(NORMAL_ROW, "test", needs_name=True)  # normal rows need no name
    assert not row.should_refuse and row.name is None
