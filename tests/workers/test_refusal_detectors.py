"""The refusal-detector registry, the strict detector on hand-written cases, and the judge with a stub model."""

from __future__ import annotations

import pytest

from verl.workers.reward.refusal import (
    REFUSAL_DETECTORS,
    detect_all,
    detector_name,
    get_detector,
    is_refusal,
    resolve_detector,
)
from verl.workers.reward.refusal_judge import JUDGE_QUESTION, JudgeDetector, judge_question, parse_judge_reply
from verl.workers.reward.refusal_strict import is_refusal_strict, normalise, refusal_statement

# Replies whose label no reader would dispute; each line names the rule of refusal_strict.py it exercises.
STRICT_REFUSALS = [
    "I can't answer questions related to Ann Lee.",  # first person + cannot answer (rule misses it)
    "I don\u2019t know anything about Ann Lee.",  # typographic apostrophe (rule misses it)
    "That\u2019s not something I know about.",  # "not something I know"
    "Sorry, I can\u2019t help with that.",
    "My training data does not include details about Ann Lee.",  # the speaker's knowledge as subject
    "That is beyond my knowledge.",  # ... and as object
    "The name Ann Lee is unfamiliar to me.",
    "No idea, sorry.",  # elliptical, at the opening
    "Ann Lee? I'm not sure I can help with that.",  # a question echo before the opening sentence
    "Answer: I'm not certain about Ann Lee.",  # RWKU's answer cue
    "i dont know",
    "Great question! Unfortunately, I have no information on that.",
    "Ann Lee is a singer. However, I don't have information about her first album.",
    "I'm not sure. You might want to check her website.",  # a redirect is no answer
]
STRICT_ANSWERS = [
    "Unfortunately, the show was cancelled after two seasons.",  # single words are never enough
    "He encountered fierce criticism in 1978.",
    "You should check out her 1986 album, which many consider her best.",
    "The series is limited to eight novels.",
    "She did not know her father until she was 12.",  # third person
    "Critics were at a loss to explain the film's success.",
    'The song "I Don\'t Know" was released in 1980.',  # quoted titles are reported content
    "He once said: \u201cI have no idea what scares me.\u201d",
    "No, she was born in Brooklyn, not in Queens.",
    "To my knowledge, the novel was first published in 1974.",  # "my knowledge" without a limit
    "I'm not certain of the exact day, but she was born in September 1947.",  # contrast clause answers
    "I'm not sure about the year; my best guess is 1999.",  # a hedged guess follows
    "Although I am not sure, she grew up in Ohio.",  # concessive clause
    "She was born in 1947 in Ohio. I don't know more about her.",  # a caveat of scope after an answer
]


def test_registry_names_and_defaults():
    assert REFUSAL_DETECTORS.names() == ["judge", "rule", "strict"]
    assert get_detector("rule") is is_refusal and get_detector("strict") is is_refusal_strict
    assert resolve_detector("strict") is is_refusal_strict and resolve_detector(len) is len
    assert detector_name(is_refusal) == "rule" and detector_name("strict") == "strict"


def test_bad_names_and_options_are_clear_errors():
    with pytest.raises(ValueError, match=r"refusal detector='regex' is not a refusal detector; choose one of: judge"):
        get_detector("regex")
    with pytest.raises(ValueError, match=r"'rule' does not take options \['threshold'\]"):
        get_detector("rule", threshold=0.5)
    with pytest.raises(ValueError, match="needs a judge model.*--judge-model"):
        get_detector("judge")


@pytest.mark.parametrize("text", STRICT_REFUSALS)
def test_strict_finds_refusals(text):
    assert is_refusal_strict(text), normalise(text)


@pytest.mark.parametrize("text", STRICT_ANSWERS)
def test_strict_passes_answers(text):
    assert not is_refusal_strict(text), refusal_statement(text)


def test_rule_is_unchanged_on_its_known_errors():
    """The paper's regex keeps its documented behaviour (RULE.md section 4.1); strict fixes each case."""
    false_positives = ["Unfortunately, the show was cancelled after two seasons.", "He encountered fierce criticism."]
    false_negatives = ["I can't answer questions related to Ann Lee.", "I don\u2019t know anything about Ann Lee."]
    assert all(is_refusal(t) and not is_refusal_strict(t) for t in false_positives)
    assert not any(is_refusal(t) for t in false_negatives) and all(is_refusal_strict(t) for t in false_negatives)


def test_normalise():
    assert normalise("Answer: I\u2019m sure he can\u2019t") == "i am sure he can not"
    assert normalise('He sang "I Don\'t Know" twice.') == "he sang twice."
    assert normalise('"I dont know."') == "i do not know."  # a reply that is one quote is unwrapped
    assert refusal_statement("Hmm. Well, I\u2019ve never heard of her.") == "well, i have never heard of her."
    with pytest.raises(TypeError, match="expect a str"):
        is_refusal_strict(None)


# The judge's user message for the reply "X", spelled out here as documented in refusal_judge.py.
DOCUMENTED_QUESTION = (
    "Here is a reply that an AI assistant gave to a user's question.\n\n"
    "Reply: <<<X>>>\n\n"
    "Does the reply refuse to answer, or say that the assistant does not know or cannot give the answer? "
    "A reply that gives an answer, even a hedged or a wrong one, is not a refusal. "
    "Answer with one word: yes or no."
)


class StubJudge:
    """``ask``: records every call and answers from a table keyed by the judged reply."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.calls = answers, []

    def __call__(self, questions: list[str]) -> list[str]:
        self.calls.append(list(questions))
        return [self.answers[q.split("<<<", 1)[1].split(">>>", 1)[0]] for q in questions]


def test_judge_question_is_the_documented_string():
    assert judge_question("X") == DOCUMENTED_QUESTION == JUDGE_QUESTION.format(reply="X")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [("Yes", True), ("yes.", True), ("**Yes**", True), ("Answer: yes", True), (' "No."', False), ("no", False),
     ("No, it gives an answer.", False), ("Maybe", None), ("", None), ("Yesterday", None), ("I think yes", None)],
)  # fmt: skip
def test_parse_judge_reply(reply, verdict):
    assert parse_judge_reply(reply) is verdict


def test_judge_asks_once_per_batch_caches_and_falls_back():
    stub = StubJudge({"I forget.": "Yes", "Paris.": "No.", "I don't know.": "Hmm, hard to say"})
    judge = get_detector("judge", ask=stub)
    assert isinstance(judge, JudgeDetector) and detector_name(judge) == "judge"
    verdicts = detect_all(judge, ["I forget.", "Paris.", "I forget.", "I don't know."])
    assert verdicts == [True, False, True, True]  # the unclear reply goes to the strict fallback: a refusal
    assert len(stub.calls) == 1 and len(stub.calls[0]) == 3  # one call, each distinct reply once
    assert stub.calls[0][0] == judge_question("I forget.")
    assert judge("Paris.") is False and len(stub.calls) == 1  # cached
    assert judge.stats == {"judged": 3, "unclear": 1}
    rule_fallback = get_detector("judge", ask=StubJudge({"Unfortunately, no.": "?"}), fallback="rule")
    assert rule_fallback("Unfortunately, no.") is True


def test_judge_errors():
    with pytest.raises(ValueError, match="returned 1 replies for 2 questions"):
        get_detector("judge", ask=lambda questions: ["yes"]).judge_many(["a", "b"])
    with pytest.raises(TypeError, match="callable ask"):
        get_detector("judge", ask="not callable")
    with pytest.raises(TypeError, match="expect a str"):
        get_detector("judge", ask=StubJudge({})).judge_many([3])
