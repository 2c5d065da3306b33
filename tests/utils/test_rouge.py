"""ROUGE wrappers vs the real packages and hand-computed values."""

import json
import sys

import pytest
from rouge import Rouge
from rouge_score import rouge_scorer

from verl.utils.rouge import rouge_l_f1_google, rouge_l_recall, rouge_l_recall_mean, rouge_scores_google


def _package_recall(hypothesis, reference):
    """The reference: the pltrdy package with its default (all-metric) instance, as RWKU calls it."""
    return Rouge().get_scores(hypothesis, reference)[0]["rouge-l"]["r"]


@pytest.fixture(scope="module")
def text_pairs(shared_data):
    """(hypothesis, reference) pairs from real boundary rows: questions / answers of neighbours."""
    rows = json.loads((shared_data / "rwku/Target/1_Stephen_King/reject_with_fb_neighbor_target.json").read_text())
    pairs = []
    for row in rows[:60]:
        neighbor, fb_neighbor = row["neighbor_question"], row["FB_neighbor_question"]
        pairs.append((neighbor["question"], neighbor["answer"]))
        pairs.append((fb_neighbor["answer"], neighbor["answer"]))
        pairs.append((neighbor["answer"], neighbor["answer"]))
        pairs.append((row["output"], row["instruction"]))
    return pairs


def test_recall_equals_package_on_real_texts(text_pairs):
    values = [rouge_l_recall(hyp, ref) for hyp, ref in text_pairs]
    assert values == [_package_recall(hyp, ref) for hyp, ref in text_pairs]
    assert 0.0 < sum(values) / len(values) < 1.0  # the pairs are neither all identical nor all disjoint


@pytest.mark.parametrize(
    "hypothesis, reference, expected",
    [
        ("Richard Bachman.", "Richard Bachman", 1.0),  # "." splits sentences, it is not a token
        ("Portland", "Portland, Maine", 0.0),  # reference token is "Portland," (punctuation kept)
        ("portland maine", "Portland Maine", 0.0),  # case sensitive
        ("He wrote Carrie", "Carrie", 1.0),
        ("the", "the cat the dog", 1 / 3),  # token sets: 3 unique reference tokens
        # union LCS over hypothesis sentences (the package docstring's example): w1 w2 + w1 w3 w5 -> 4/5
        ("w1 w2 w6 w7 w8. w1 w3 w8 w9 w5", "w1 w2 w3 w4 w5", 4 / 5),
        ("Maine Portland", "Portland Maine", 1 / 2),  # order matters (LCS)
    ],
)
def test_recall_hand_computed(hypothesis, reference, expected):
    assert rouge_l_recall(hypothesis, reference) == pytest.approx(expected)
    assert _package_recall(hypothesis, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    "hypothesis, reference",
    [("", "Carrie"), (".", "Carrie"), ("...", "Carrie"), ("Carrie", ""), ("Carrie", ".."), ("", "")],
)
def test_degenerate_inputs_score_zero_where_the_package_raises(hypothesis, reference):
    with pytest.raises(ValueError):
        Rouge().get_scores(hypothesis, reference)
    assert rouge_l_recall(hypothesis, reference) == 0.0


def test_whitespace_only_is_not_degenerate_for_the_package():
    # one sentence with the single token "" -- no exception, and no match against a normal reference
    assert rouge_l_recall("   ", "Carrie") == _package_recall("   ", "Carrie") == 0.0


def test_long_sentence_beyond_default_recursion_limit_is_scored():
    # 1,500 words without a "." : the package's recursive LCS back-tracking walks ~1,500 frames deep
    hypothesis = "word1 " + " ".join(f"z{i}" for i in range(1500))
    assert rouge_l_recall(hypothesis, "word1 word2 word3") == pytest.approx(1 / 3)
    assert sys.getrecursionlimit() >= 1500


def test_non_string_inputs_raise_type_error():
    with pytest.raises(TypeError, match="hypothesis"):
        rouge_l_recall(None, "Carrie")
    with pytest.raises(TypeError, match="reference"):
        rouge_l_recall("Carrie", ["Carrie"])


def test_mean_equals_package_avg_on_normal_inputs(text_pairs):
    hypothesis = text_pairs[0][0]
    references = [ref for _, ref in text_pairs[:12]]
    expected = Rouge(metrics=["rouge-l"]).get_scores([hypothesis] * len(references), references, avg=True)
    assert rouge_l_recall_mean(hypothesis, references) == expected["rouge-l"]["r"]


def test_mean_of_single_string_reference_is_its_recall():
    assert rouge_l_recall_mean("He wrote Carrie", "Carrie") == 1.0
    assert rouge_l_recall_mean("He wrote Carrie", ["Carrie", "Misery"]) == 0.5


def test_mean_scores_a_degenerate_reference_pair_as_zero():
    # the package (and so RULE, through its bare except) loses the whole call ...
    with pytest.raises(ValueError):
        Rouge().get_scores(["Carrie", "Carrie"], ["Carrie", ""], avg=True)
    # ... here only the failing pair scores 0 and still counts in the mean
    assert rouge_l_recall_mean("Carrie", ["Carrie", ""]) == 0.5
    # a degenerate hypothesis fails every pair: 0.0 both ways
    assert rouge_l_recall_mean("...", ["Carrie", "Misery"]) == 0.0


def test_mean_needs_a_reference():
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l_recall_mean("Carrie", [])


def test_google_scores_hand_computed():
    # target "the cat sat on the mat": 6 tokens, 5 bigrams; prediction "The cat sat" lowercased: 3 tokens
    scores = rouge_scores_google("The cat sat", "the cat sat on the mat")
    assert scores["rouge1_precision"] == 1.0 and scores["rouge1_recall"] == pytest.approx(3 / 6)
    assert scores["rouge2_recall"] == pytest.approx(2 / 5)
    assert scores["rouge2_fmeasure"] == pytest.approx(2 * 1.0 * 0.4 / 1.4)
    assert scores["rougeL_recall"] == pytest.approx(0.5)
    assert scores["rougeL_fmeasure"] == pytest.approx(2 / 3)
    assert rouge_l_f1_google("The cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert set(scores) == {
        f"{t}_{f}" for t in ("rouge1", "rouge2", "rougeL", "rougeLsum") for f in ("precision", "recall", "fmeasure")
    }


def test_google_is_case_and_punctuation_insensitive_unlike_pltrdy():
    assert rouge_l_f1_google("PORTLAND!", "Portland, Maine") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert rouge_l_recall("PORTLAND!", "Portland, Maine") == 0.0
    assert rouge_l_f1_google("", "") == 0.0 and rouge_l_f1_google("", "Carrie") == 0.0


def test_google_matches_rouge_score_package(text_pairs):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    for prediction, target in text_pairs[:40]:
        expected = scorer.score(target, prediction)
        got = rouge_scores_google(prediction, target)
        assert got["rougeL_fmeasure"] == expected["rougeL"].fmeasure
        assert got["rouge1_recall"] == expected["rouge1"].recall
        assert rouge_l_f1_google(prediction, target) == expected["rougeL"].fmeasure
