"""Hand cases for BBH EM (list vs RWKU's character quirk), TriviaQA EM/F1, fluency entropy, tokenizers, AUC."""

from __future__ import annotations

import math
import random

import pytest

from verl.eval.text_metrics import (
    bbh_exact_match,
    cut_before_words,
    exact_match,
    extract_bbh_answer,
    fluency_entropy,
    max_f1,
    regex_word_tokenize,
    roc_auc,
    token_f1,
    treebank_word_tokenize,
)


@pytest.mark.parametrize(
    "prediction, answer, list_em, legacy_em",
    [
        ("False", "False", 1, 0),  # chars F, a, l, s, e never equal "false"
        ("(A)", "(A)", 1, 1),
        ("(A)", "(B)", 0, 1),  # "(A)" normalizes to nothing and matches the answer's "(" character
        ("B", "(A)", 0, 0),
        ("12", "12", 1, 0),
        ("9", "9", 1, 1),
        ("yes", "Yes", 1, 0),
        ("valid", "valid", 1, 0),
        ("d", "(D)", 1, 1),
    ],
)
def test_bbh_list_em_vs_legacy_character_quirk(prediction, answer, list_em, legacy_em):
    assert bbh_exact_match(prediction, answer) == list_em
    assert bbh_exact_match(prediction, answer, legacy_char_em=True) == legacy_em


def test_bbh_answer_extraction():
    assert extract_bbh_answer("Let's think step by step. A is true. So the answer is (B).") == "(B)"
    assert extract_bbh_answer("so the answer is 12. Then more text.") == "12"
    assert extract_bbh_answer("The answer is True.") == "True"
    assert extract_bbh_answer("  no marker here  ") == "no marker here"
    assert extract_bbh_answer("   ") == "NOANSWER"


def test_triviaqa_em_and_f1_hand_cases():
    assert exact_match("The John Key", ["Key", "John Key"]) == 1
    assert exact_match("John Key.\nQ: next question", ["John Key"]) == 0
    assert token_f1("John Key was elected", "John Key") == pytest.approx(2 / 3)  # p = 2/4, r = 1
    assert max_f1("John Key was elected", ["Key", "John Key"]) == pytest.approx(2 / 3)
    assert token_f1("Paris", "London") == 0.0
    assert token_f1("", "Paris") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalize to nothing


def test_fluency_entropy_hand_case():
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # bigrams (a b) x2, (b a) x1
    h3 = 1.0  # trigrams (a b a), (b a b)
    assert fluency_entropy("a b a b") == pytest.approx(h2 / 3 + 2 * h3 / 3)
    assert fluency_entropy("single") == 0.0
    assert fluency_entropy("") == 0.0
    # every n-gram distinct: H_n = log2(count)
    assert fluency_entropy("w1 w2 w3 w4 w5") == pytest.approx(math.log2(4) / 3 + 2 * math.log2(3) / 3)


SENTENCES = [
    "He said \"don't go,\" and I'm sure the U.S. isn't 3.5 km away.",
    "Mr. Smith can't pay $1,000 (or 10:30 p.m.)!",
    "Well-known writers -- like King -- wrote 12 books... in 1974?",
    "It's Stephen's book; they've read it.",
]


@pytest.mark.parametrize("sentence", SENTENCES)
def test_regex_tokenizer_matches_nltk_treebank_on_single_sentences(sentence):
    from nltk.tokenize import NLTKWordTokenizer

    assert regex_word_tokenize(sentence) == NLTKWordTokenizer().tokenize(sentence)


def test_tokenizers_hand_case():
    expected = ["I", "do", "n't", "know", ".", "He", "does", "."]
    assert regex_word_tokenize("I don't know. He does.") == expected
    assert treebank_word_tokenize("I don't know. He does.") == expected


def test_cut_before_words_in_muse_order():
    words = ("\n\n", "\nQuestion", "Question:")
    assert cut_before_words("the Golden Snitch\n\nQuestion: next", words) == "the Golden Snitch"
    assert cut_before_words("1995\nQuestion: next", words) == "1995"
    assert cut_before_words("Astoria Question: x", words) == "Astoria "
    assert cut_before_words("nothing to cut", words) == "nothing to cut"


def test_roc_auc_hand_case_and_brute_force():
    assert roc_auc([1, 2, 3], [2, 4]) == pytest.approx((1 + 0.5 + 0 + 3) / 6)
    assert roc_auc([0.0], [1.0]) == 1.0 and roc_auc([1.0], [0.0]) == 0.0
    rng = random.Random(0)
    negatives = [rng.choice([0.1, 0.2, 0.3, 0.5]) for _ in range(40)]
    positives = [rng.choice([0.2, 0.3, 0.4, 0.6]) for _ in range(30)]
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    assert roc_auc(negatives, positives) == pytest.approx(sum(pairs) / len(pairs))
    assert math.isnan(roc_auc([float("nan")], [1.0]))
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([], [1.0])
