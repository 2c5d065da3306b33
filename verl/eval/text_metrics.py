"""Small text metrics shared by the evaluators: SQuAD-style EM/F1, BBH answer extraction, n-gram entropy
(fluency), MUSE's answer cutting, and a rank-based ROC-AUC.

Word tokenizers for fluency (``nltk.word_tokenize`` needs the ``punkt`` data, which is not on PyPI):

* ``"regex"`` (default, no dependency): Penn-Treebank-like rules - words (hyphens inside kept), numbers
  with ``.``/``,``/``:`` inside kept, clitics split (``don't`` -> ``do n't``, ``I'm`` -> ``I 'm``,
  ``can't`` -> ``ca n't``), dotted abbreviations (``U.S.``) and a few titles (``Mr.``) kept whole, every other
  punctuation mark its own token, ``"`` turned into `````` / ``''`` (opening / closing) as nltk does.
  Differences from ``nltk.word_tokenize``: no punkt sentence model, so a period after an ordinary word is
  always split off (nltk keeps a few learned abbreviations such as ``etc.`` whole); ``O'Neil`` becomes
  ``O ' Neil`` (nltk keeps it); no special cases for ``gonna``/``cannot``; Unicode quotes are plain marks.
* ``"treebank"``: nltk's ``NLTKWordTokenizer`` (no data files) on sentences split by a regex at
  ``[.!?]`` + whitespace: equal to ``word_tokenize`` except where punkt would split sentences differently.
* ``"nltk"``: ``nltk.word_tokenize`` itself (needs ``punkt``/``punkt_tab`` installed).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

NOANSWER = "NOANSWER"
_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
BBH_ANSWER = re.compile(r"[t|T]he answer is (.*?)\.")


# ----------------------------------------------------------------------------- SQuAD-style EM / F1
def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop articles a/an/the, collapse whitespace (RWKU's BBH/TriviaQA)."""
    text = text.lower()
    text = "".join(char for char in text if char not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact_match(prediction: str, references: Sequence[str]) -> int:
    """1 if the normalized prediction equals any normalized reference (max over ``references``)."""
    predicted = answer_tokens(prediction)
    return max(int(answer_tokens(reference) == predicted) for reference in references)


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-tokens F1 of normalized texts; if either side is empty, 1 iff both are."""
    reference_tokens, prediction_tokens = answer_tokens(reference), answer_tokens(prediction)
    if not reference_tokens or not prediction_tokens:
        return float(reference_tokens == prediction_tokens)
    common = sum((Counter(reference_tokens) & Counter(prediction_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction_tokens), common / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def max_f1(prediction: str, references: Sequence[str]) -> float:
    return max(token_f1(prediction, reference) for reference in references)


# ----------------------------------------------------------------------------- BBH
def extract_bbh_answer(output: str) -> str:
    """First capture of ``[t|T]he answer is (.*?)\\.`` (stripped), else the stripped output; empty -> NOANSWER."""
    found = BBH_ANSWER.search(output)
    prediction = found.group(1).strip() if found else output.strip()
    return prediction or NOANSWER


def bbh_exact_match(prediction: str, answer: str, legacy_char_em: bool = False) -> int:
    """EM against ``[answer]``; ``legacy_char_em`` iterates over the answer's characters as RWKU's code does
    (it passed the answer string where a list of references was expected)."""
    references = list(answer) if legacy_char_em else [answer]
    return exact_match(prediction, references)


# ----------------------------------------------------------------------------- fluency
_TITLES = r"(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs)\."
_REGEX_TOKEN = re.compile(
    rf"""
    ``|''                                   # quotes already rewritten
    | (?:[A-Za-z]\.){{2,}}                   # dotted abbreviations: U.S., e.g.
    | {_TITLES}
    | \d+(?:[.,:]\d+)+                       # 3.14  1,000  10:30
    | \w+?(?=n't\b)                          # the "do" of "don't"
    | n't\b
    | '(?:s|m|d|ll|re|ve)\b                  # clitics
    | \w+(?:-\w+)*                           # words, hyphenated words
    | \.\.\.|--
    | [^\w\s]                                # any other mark
    """,
    re.VERBOSE | re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def regex_word_tokenize(text: str) -> list[str]:
    """Offline approximation of ``nltk.word_tokenize`` (see the module docstring for the differences)."""
    text = re.sub(r'^"', "``", text)
    text = re.sub(r'(?<=[\s(\[{<])"', "``", text)
    text = text.replace('"', "''")
    return _REGEX_TOKEN.findall(text)


def treebank_word_tokenize(text: str) -> list[str]:
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    return [token for sentence in _SENTENCE_END.split(text) for token in tokenizer.tokenize(sentence)]


def nltk_word_tokenize(text: str) -> list[str]:
    import nltk

    return nltk.word_tokenize(text)


WORD_TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "regex": regex_word_tokenize,
    "treebank": treebank_word_tokenize,
    "nltk": nltk_word_tokenize,
}


def get_word_tokenizer(name: str) -> Callable[[str], list[str]]:
    if name not in WORD_TOKENIZERS:
        raise ValueError(f"unknown fluency tokenizer {name!r}; choose one of: {', '.join(WORD_TOKENIZERS)}")
    return WORD_TOKENIZERS[name]


def ngram_entropy(tokens: Sequence[str], n: int) -> float:
    """Shannon entropy (bits) of the relative n-gram frequencies; 0.0 when there is no n-gram."""
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def fluency_entropy(text: str, tokenizer: str = "regex") -> float:
    """RWKU's per-text fluency: mean(2/3 * H2, 4/3 * H3) = H2/3 + 2*H3/3 over word n-grams."""
    tokens = get_word_tokenizer(tokenizer)(text)
    return (2 / 3 * ngram_entropy(tokens, 2) + 4 / 3 * ngram_entropy(tokens, 3)) / 2


# ----------------------------------------------------------------------------- MUSE
def cut_before_words(text: str, words: Sequence[str]) -> str:
    """MUSE KnowMem post-processing: for each word in order, keep what precedes its first occurrence."""
    for word in words:
        text = text.split(word)[0]
    return text


# ----------------------------------------------------------------------------- statistics
def mean_or_none(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """ROC-AUC = P(positive score > negative score) + 0.5 P(tie), via average ranks (Mann-Whitney U).

    Equals ``sklearn.metrics.roc_auc_score`` with labels 1 for ``positives``. NaN scores give NaN.
    """
    if not negatives or not positives:
        raise ValueError(f"ROC-AUC needs both classes, got {len(negatives)} negatives and {len(positives)} positives")
    values = [float(v) for v in negatives] + [float(v) for v in positives]
    if any(math.isnan(v) for v in values):
        return float("nan")
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for position in range(start, stop + 1):
            ranks[order[position]] = (start + stop) / 2 + 1  # average 1-based rank of the tie group
        start = stop + 1
    n_negative, n_positive = len(negatives), len(positives)
    positive_rank_sum = sum(ranks[n_negative:])
    return (positive_rank_sum - n_positive * (n_positive + 1) / 2) / (n_negative * n_positive)
