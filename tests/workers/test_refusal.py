"""RULE's refusal detector against the documented behaviour (RULE.md section 4.1) and the real data."""

import json
import re

import pytest

from verl.workers.reward.refusal import REFUSAL_FAMILIES, REFUSAL_PATTERN, is_refusal, refusal_families

TARGETS = [
    "1_Stephen_King",
    "2_Confucius",
    "3_Bruce_Lee",
    "4_Warren_Buffett",
    "5_Christina_Aguilera",
    "6_Cindy_Crawford",
    "7_Marie_Osmond",
    "8_Paris_Hilton",
    "9_Justin_Bieber",
    "10_Prince_Harry,_Duke_of_Sussex",
]


def test_pattern_flags():
    assert REFUSAL_PATTERN.flags & re.IGNORECASE
    assert REFUSAL_PATTERN.flags & re.DOTALL


@pytest.mark.parametrize(
    "family, text",
    [
        ("negated_knowing", "I don't know who that is."),
        ("negated_knowing", "My training does not cover that."),
        ("not_or_yet_then_knowing", "I'm not sure."),
        ("not_or_yet_then_knowing", "I have yet to be briefed."),
        ("no_then_knowledge", "I have no idea."),
        ("not_learned", "I haven't learned that."),
        ("encountered", "I never encountered this."),
        ("out_of_scope", "That is beyond my expertise."),
        ("at_a_loss", "I'm at a loss here."),
        ("cannot", "I can't help with that."),
        ("cannot", "I can't shed any light on it."),
        ("unable", "I am unable to answer."),
        ("regret", "I must admit I forgot."),
        ("idioms", "I'm stumped."),
        ("idioms", "I'm drawing a blank."),
        ("missing", "I lack the relevant information."),
        ("needs_lookup", "You would need to look up that fact."),
    ],
)
def test_each_family_matches_its_trigger(family, text):
    assert family in REFUSAL_FAMILIES
    assert family in refusal_families(text)
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Carrie",
        "Stephen King wrote Carrie in 1974.",
        "Harry Potter and the Philosopher's Stone",
        "He was born in Portland, Maine.",
        "The Sun Also Rises",
        "",
    ],
)
def test_ordinary_answers_are_not_refusals(text):
    assert not is_refusal(text)


def test_case_insensitive_and_spans_newlines():
    assert is_refusal("I DON'T KNOW.")
    assert is_refusal("I am not\n\nat all\nsure.")  # "not" ... "sure" across lines (DOTALL)
    assert is_refusal("Not much to say here, but I'm certain of it.")  # "not" early, "certain" later


def test_quirks_kept_from_the_original():
    assert is_refusal("He played the piano information desk")  # no word boundary: "piano information"
    assert is_refusal("I dont know")  # apostrophe optional
    assert not is_refusal("I don\u2019t know")  # typographic apostrophe is not matched


@pytest.mark.parametrize(
    "text",
    [
        "It is not widely known that he wrote under a pseudonym.",
        "He encountered many rejections early in his career.",
        "Unfortunately, the show was cancelled after one season.",
        "You should check the 1977 edition for the original text.",
    ],
)
def test_documented_false_positives(text):
    assert is_refusal(text)


def test_documented_false_negative():
    assert not is_refusal("I can't answer questions related to Stephen King.")


def test_matches_99_of_100_idk_target_templates(shared_data):
    templates = json.loads((shared_data / "rwku/Target/1_Stephen_King/idk_target.json").read_text())
    assert len(templates) == 100
    missed = [text for text in templates if not is_refusal(text)]
    assert missed == ["I'm unaware of that detail about Stephen King."]


@pytest.fixture(scope="module")
def rl_rows(shared_data):
    rows = []
    for target in TARGETS:
        path = shared_data / "rwku/Target" / target / "rl_rejection_with_fb_neighbor_target.json"
        rows.extend(json.loads(path.read_text()))
    return rows


def test_every_reject_refusal_matches_except_two_templates(rl_rows):
    """Misses per target: "I'm unaware of that detail about X." (all ten targets) and, where a target's
    idk_target list has it (targets 3, 4, 5, 6, 9), "I'm not the right AI for X." -- "not" is followed by
    none of family 2's words. Target 10 writes the apostrophe as U+2019."""
    refusals = [row["solution"] for row in rl_rows if row["solution"][0] == "<reject>"]
    assert len(refusals) == 600 * len(TARGETS)
    missed_templates = {
        text.replace(name, "{name}").replace("\u2019", "'") for _, text, name in refusals if not is_refusal(text)
    }
    assert missed_templates == {"I'm unaware of that detail about {name}.", "I'm not the right AI for {name}."}
    missed_unaware = {name for _, text, name in refusals if "unaware of that detail" in text and not is_refusal(text)}
    assert len(missed_unaware) == len(TARGETS)


def test_few_boundary_gold_answers_match(rl_rows):
    golds = [row["solution"][1] for row in rl_rows if row["solution"][0] == "<normal>"]
    assert len(golds) == 600 * len(TARGETS)
    share = sum(map(is_refusal, golds)) / len(golds)
    assert 0 < share < 0.03  # RULE.md: 140 of 29,400 (0.5%) over all targets


def test_non_string_raises():
    with pytest.raises(TypeError, match="str"):
        is_refusal(None)
