"""ROUGE wrappers: RWKU/RULE's pltrdy ``rouge`` 1.0.1 recall and MUSE's Google ``rouge_score``.

Two different packages define the published numbers, and they must not be mixed:

* RWKU probes and every RULE reward use ROUGE-L **recall** from the PyPI package ``rouge`` 1.0.1 (pltrdy):
  both texts are split into "sentences" on ``"."``, whitespace is collapsed, tokens are split on single
  spaces, there is **no lowercasing and no punctuation stripping** ("Portland" vs "Portland, Maine" = 0.0,
  because the reference token is ``"Portland,"``), tokens are *sets* (``exclusive=True``) and the recall is
  the union-LCS over reference sentences divided by the number of unique reference tokens.
* MUSE uses Google's ``rouge_score`` (lowercasing tokenizer, no stemmer), F1 for its headline numbers.

Both packages are called, never re-implemented. The pltrdy package raises on degenerate inputs; here those
inputs get a defined score (see :func:`rouge_l_recall`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from functools import lru_cache

# Guards the (monotone) raise of the interpreter's recursion limit, see _ensure_recursion_headroom.
_RECURSION_LOCK = threading.Lock()
# Frames kept free beyond the worst-case depth of the package's recursive LCS back-tracking.
_RECURSION_MARGIN = 200
GOOGLE_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@lru_cache(maxsize=1)
def _pltrdy_rouge_l():
    """One ``rouge.Rouge`` instance computing only ROUGE-L recall (skips ROUGE-1/2 and precision/F work)."""
    from rouge import Rouge

    return Rouge(metrics=["rouge-l"], stats=["r"])


@lru_cache(maxsize=4)
def _google_scorer(rouge_types: tuple[str, ...] = GOOGLE_ROUGE_TYPES):
    """MUSE's scorer: ``RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)``.

    Each type is scored independently, so a scorer restricted to ``("rougeL",)`` gives the same rougeL value.
    """
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=False)


def _has_no_sentence(text: str) -> bool:
    """True when ``text.split(".")`` has no non-empty piece: the empty string or only ``"."`` characters.

    The pltrdy package drops empty pieces, so such a text has zero sentences and ``get_scores`` raises
    ``ValueError("Collections must contain at least 1 sentence.")`` (``"Hypothesis is empty."`` with ROUGE-1/2).
    """
    return not text.replace(".", "")


def _current_stack_depth() -> int:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


def _ensure_recursion_headroom(hypothesis: str, reference: str) -> None:
    """Let the package finish on long sentences instead of raising ``RecursionError``.

    ``rouge``'s LCS back-tracking (``_recon_lcs``) recurses once per step along the DP path, so its depth
    reaches ``len(reference_sentence) + len(hypothesis_sentence)`` words. A sentence of several hundred
    words without a ``"."`` (e.g. a 1,024-token RL rollout that loops) exceeds CPython's default limit of
    1,000 frames. The original RULE reward turned that ``RecursionError`` into 0 (its bare ``except``),
    which made the score depend on how deep the caller's stack happened to be; here the limit is raised
    (never lowered; Python 3.11+ pure-Python frames do not use the C stack) so the package's own value
    is returned. Short texts, the common case, skip this entirely.
    """
    bound = len(hypothesis.split()) + len(reference.split()) + 2
    if bound < 300:
        return
    needed = bound + _current_stack_depth() + _RECURSION_MARGIN
    with _RECURSION_LOCK:
        if sys.getrecursionlimit() < needed:
            sys.setrecursionlimit(needed)


def _check_str(value, what: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"ROUGE {what} must be a str, got {type(value).__name__}: {value!r:.80}")


def rouge_l_recall(hypothesis: str, reference: str) -> float:
    """ROUGE-L recall of ``hypothesis`` against ``reference`` exactly as ``rouge`` 1.0.1 computes it.

    Equals ``Rouge().get_scores(hypothesis, reference)[0]["rouge-l"]["r"]`` (RWKU's per-probe score and
    RULE's ``rec(x)``), case and punctuation sensitive: ``rouge_l_recall("Richard Bachman.", "Richard Bachman")``
    is 1.0, ``rouge_l_recall("Portland", "Portland, Maine")`` is 0.0.

    Degenerate inputs, on which the package raises ``ValueError``, score **0.0**: a hypothesis or a
    reference that is empty or made only of ``"."`` characters (``""``, ``"."``, ``"..."``) has no sentence
    after the package's split on ``"."``, so there is nothing to match (hypothesis) or nothing to recall
    (reference); 0.0 is also what RULE's reward returned (any exception -> 0). Whitespace-only text is *not*
    degenerate for the package: it becomes one sentence with the single token ``""``, which matches only a
    reference that has a whitespace-only sentence too (e.g. the piece after ``". "`` at its end).
    Sentences too long for the default recursion limit are scored normally (see
    :func:`_ensure_recursion_headroom`). Non-string inputs raise ``TypeError``.
    """
    _check_str(hypothesis, "hypothesis")
    _check_str(reference, "reference")
    if _has_no_sentence(hypothesis) or _has_no_sentence(reference):
        return 0.0
    _ensure_recursion_headroom(hypothesis, reference)
    return float(_pltrdy_rouge_l().get_scores(hypothesis, reference)[0]["rouge-l"]["r"])


def rouge_l_recall_mean(hypothesis: str, references: Sequence[str]) -> float:
    """Mean of :func:`rouge_l_recall` of ``hypothesis`` against each of ``references``.

    RULE's ``compute_rouge_l`` calls ``get_scores([hyp] * k, refs, avg=True)["rouge-l"]["r"]``, which sums
    the per-pair recalls in order and divides by ``k``; this function adds the same values in the same order,
    so on non-degenerate inputs the result is bit-identical.

    Choice for degenerate pairs: each pair is scored on its own, so a degenerate *reference* scores 0.0 and
    still counts in the denominator. The original instead loses the whole call (the package raises inside
    ``avg=True`` and RULE's bare ``except`` returns 0.0): e.g. references ``["Carrie", ""]`` with hypothesis
    ``"Carrie"`` give 0.5 here and 0.0 in RULE. The two agree whenever the *hypothesis* is degenerate (every
    pair fails -> 0.0 both ways), and RULE's data has no empty gold answers, so published behaviour is kept
    while a stray empty reference no longer wipes out the others. A plain ``str`` is treated as one
    reference (as RULE does); an empty list raises ``ValueError``.
    """
    if isinstance(references, str):
        references = [references]
    references = list(references)
    if not references:
        raise ValueError("rouge_l_recall_mean needs at least one reference, got an empty list")
    return sum(rouge_l_recall(hypothesis, reference) for reference in references) / len(references)


def rouge_scores_google(prediction: str, target: str) -> dict[str, float]:
    """MUSE's ROUGE: Google ``rouge_score`` with ``use_stemmer=False``, called as ``score(target, prediction)``.

    Returns floats keyed ``"<type>_<precision|recall|fmeasure>"`` for type in rouge1, rouge2, rougeL,
    rougeLsum, e.g. ``"rougeL_fmeasure"`` (MUSE's VerbMem/KnowMem score) and ``"rougeL_recall"``.
    The tokenizer lowercases and splits on non-alphanumerics; empty texts give 0.0 (no exception).
    """
    _check_str(prediction, "prediction")
    _check_str(target, "target")
    scores = _google_scorer().score(target, prediction)
    return {
        f"{rouge_type}_{field}": float(getattr(scores[rouge_type], field))
        for rouge_type in GOOGLE_ROUGE_TYPES
        for field in ("precision", "recall", "fmeasure")
    }


def rouge_l_f1_google(prediction: str, target: str) -> float:
    """MUSE's headline number: ROUGE-L F1 of ``prediction`` vs ``target`` (Google ``rouge_score``, no stemmer)."""
    _check_str(prediction, "prediction")
    _check_str(target, "target")
    return float(_google_scorer(("rougeL",)).score(target, prediction)["rougeL"].fmeasure)
