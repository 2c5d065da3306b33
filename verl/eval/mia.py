"""Membership-inference features (RWKU MIA, MUSE PrivLeak) from per-token log-probs, and the RWKU MIA suite.

Per text x (BOS added, no chat template) with token log-probs l_t for t = 2..T (``Generator.score``):

* ``loss`` = mean l_t  (RWKU's ``ll = -NLL``; its JSON key "loss" holds this negative number)
* ``nll``  = -loss     (the paper's FM / RM columns are mean ``nll`` x 100)
* ``zlib`` = loss / len(zlib.compress(x.encode("utf-8")))
* ``mink_<r>``   = mean of the lowest int(r * (T-1)) values of l_t, r = 0.1 .. 1.0
* ``mink++_<r>`` = the same over z_t = (l_t - mu_t) / sigma_t, with mu_t / sigma_t the mean / std of
  log p under the next-token distribution (Min-K%++).

All features are "higher = more member-like". RWKU stores the means of loss, zlib and Min-K%++ 20%
(its key "mink20"); we also report every feature's mean and, per feature except ``nll``, the ROC-AUC of forget-member
(``forget_mia``, positive class) vs retain-member (``retain_mia``) texts: ``mia_auc/<feature>``
(0.5 = indistinguishable; RWKU itself reports no AUC).

With ``icu`` the ICU instruction is prepended to the raw text, as RWKU's ``eval_mia`` does (the instruction's
tokens are then part of the scored text). Where int(r * (T-1)) is 0 (texts shorter than 1/r tokens) the
lowest single value is used; RWKU's code would produce NaN there.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

from verl.eval.datasets import load_mia_texts
from verl.eval.prompts import icu_prefix
from verl.eval.suites import SuiteContext, register_suite
from verl.eval.text_metrics import mean_or_none, roc_auc

RWKU_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def zlib_length(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


def lowest_k_mean(values: Sequence[float], ratio: float) -> float:
    """Mean of the lowest ``int(len(values) * ratio)`` values (at least one)."""
    k = max(int(len(values) * ratio), 1)
    ordered = sorted(values, key=lambda v: (math.isnan(v), v))  # NaN last, as numpy's sort
    return sum(ordered[:k]) / k


def rwku_mia_features(text: str, scored: dict) -> dict[str, float]:
    """RWKU's MIA features of one text from its ``Generator.score(..., distribution_stats=True)`` entry."""
    logprobs = scored["token_logprobs"]
    if not logprobs:
        raise ValueError(f"MIA text has fewer than 2 tokens after BOS handling: {text!r:.80}")
    loss = sum(logprobs) / len(logprobs)
    features = {"loss": loss, "nll": -loss, "zlib": loss / zlib_length(text)}
    z_scores = [
        (lp - mu) / sigma if sigma > 0 else float("nan")
        for lp, mu, sigma in zip(logprobs, scored["mu"], scored["sigma"])
    ]
    for ratio in RWKU_RATIOS:
        features[f"mink_{ratio}"] = lowest_k_mean(logprobs, ratio)
        features[f"mink++_{ratio}"] = lowest_k_mean(z_scores, ratio)
    return features


def score_mia_texts(ctx: SuiteContext, kind: str) -> list[dict]:
    records = load_mia_texts(ctx.target_dir, kind, ctx.options.max_probes)
    texts = []
    for record in records:
        subject = ctx.icu_subject(record)
        texts.append(record["text"] if subject is None else icu_prefix(subject) + record["text"])
    scored = ctx.generator.score(texts, add_bos=True, distribution_stats=True)
    out = []
    for index, (text, entry) in enumerate(zip(texts, scored)):
        out.append(
            {"set": kind, "index": index, "text": text, "num_tokens": len(entry["token_ids"])}
            | rwku_mia_features(text, entry)
        )
    return out


def _finite_mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return mean_or_none(finite)


@register_suite(
    "mia", "rwku", description="MIA loss / zlib / Min-K% / Min-K%++ on forget_mia (FM) and retain_mia (RM)"
)
def mia_suite(ctx: SuiteContext) -> dict:
    forget = score_mia_texts(ctx, "forget_mia")
    retain = score_mia_texts(ctx, "retain_mia")
    features = [k for k in forget[0] if k not in ("set", "index", "text", "num_tokens")] if forget else []
    metrics: dict[str, float] = {"mia_n_fm": len(forget), "mia_n_rm": len(retain)}
    for prefix, records in (("fm", forget), ("rm", retain)):
        for feature in features:
            metrics[f"mia_{prefix}_{feature}"] = _finite_mean([r[feature] for r in records])
        if records:
            metrics[f"mia_{prefix}_mink20"] = metrics[f"mia_{prefix}_mink++_0.2"]  # RWKU's key name
    if forget and retain:
        for feature in (f for f in features if f != "nll"):
            metrics[f"mia_auc/{feature}"] = roc_auc([r[feature] for r in retain], [r[feature] for r in forget])
    return {"metrics": metrics, "records": forget + retain}
