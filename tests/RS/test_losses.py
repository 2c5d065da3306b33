"""Each unlearning loss against a hand-written computation (plain Python math) on a tiny batch."""

import math

import pytest
import torch

from RS.losses import UNLEARN_LOSSES, Normalizer, StreamLogps, get_loss


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


FORGET = {"logps": [-12.0, -30.5, -4.25], "ntokens": [4.0, 10.0, 2.0], "ref": [-11.0, -31.0, -4.0]}
RETAIN = {"logps": [-6.0, -9.0, -3.0], "ntokens": [3.0, 6.0, 1.0]}


def stream(values: dict, ref: bool = False, grad: bool = False) -> StreamLogps:
    logps = torch.tensor(values["logps"], dtype=torch.float64, requires_grad=grad)
    ref_logps = torch.tensor(values["ref"], dtype=torch.float64) if ref else None
    return StreamLogps(logps, torch.tensor(values["ntokens"], dtype=torch.float64), ref_logps)


def token_nll(values: dict) -> float:
    return -sum(values["logps"]) / sum(values["ntokens"])


def test_registry_names_and_unknown_name_error():
    assert set(UNLEARN_LOSSES.names()) >= {"sft", "rt", "ga", "gd", "npo", "npo_gd", "simnpo", "dpo", "idkdpo"}
    with pytest.raises(KeyError, match="unknown unlearning loss 'nop'.*npo"):
        get_loss("nop")


def test_unknown_parameter_is_one_line_error_naming_it():
    with pytest.raises(ValueError, match="unknown parameter 'betta' for unlearning loss 'npo'; allowed: beta") as e:
        get_loss("npo").bind({"betta": 0.1})
    assert "\n" not in str(e.value)


def test_sft_rt_and_ga_are_token_mean_nll():
    streams = {"forget": stream(FORGET)}
    norm = Normalizer.of_batch(streams)
    assert norm.tokens["forget"] == 16.0 and norm.sequences == 3.0
    expected = (12.0 + 30.5 + 4.25) / 16.0
    for name, sign in (("sft", 1), ("rt", 1), ("ga", -1)):
        loss, metrics = get_loss(name)(streams, norm)
        assert loss.item() == pytest.approx(sign * expected)
        assert metrics["forget/nll"].item() == pytest.approx(expected)
    assert get_loss("rt").refusals == "generic" and get_loss("sft").refusals == "target"


def test_gd_is_minus_forget_plus_weighted_retain():
    streams = {"forget": stream(FORGET), "retain": stream(RETAIN)}
    loss, metrics = get_loss("gd")(streams, Normalizer.of_batch(streams), retain_weight=0.5)
    assert loss.item() == pytest.approx(-token_nll(FORGET) + 0.5 * token_nll(RETAIN))
    assert metrics["retain/nll"].item() == pytest.approx(18.0 / 10.0)


def test_sft_retain_is_refusal_nll_plus_weighted_retain():
    streams = {"forget": stream(FORGET), "retain": stream(RETAIN)}
    loss, metrics = get_loss("sft_retain")(streams, Normalizer.of_batch(streams), retain_weight=0.25)
    assert loss.item() == pytest.approx(token_nll(FORGET) + 0.25 * token_nll(RETAIN))
    assert metrics["forget/nll"].item() == pytest.approx(46.75 / 16.0)
    assert get_loss("sft_retain").refusals == "target"


def test_sft_retain_ul_adds_the_unlikelihood_of_starting_a_refusal_on_retain_prompts():
    starts = {"logps": [-0.1, -2.0, 0.0], "ntokens": [1.0, 1.0, 1.0]}  # log p(refusal's first token)
    streams = {"forget": stream(FORGET), "retain": stream(RETAIN), "retain_refusal": stream(starts, grad=True)}
    loss, metrics = get_loss("sft_retain_ul")(streams, Normalizer.of_batch(streams), retain_weight=0.5, ul_weight=2.0)
    unlikelihood = [-math.log(1 - p * (1 - 1e-4)) for p in (math.exp(-0.1), math.exp(-2.0), 1.0)]
    expected = token_nll(FORGET) + 0.5 * token_nll(RETAIN) + 2.0 * sum(unlikelihood) / 3
    assert loss.item() == pytest.approx(expected)
    assert metrics["retain/refusal_start_prob"].item() == pytest.approx((math.exp(-0.1) + math.exp(-2.0) + 1) / 3)
    loss.backward()
    grad = streams["retain_refusal"].logps.grad
    assert (grad > 0).all() and grad[2] > grad[0] > grad[1] and math.isfinite(grad[2])  # descent lowers each start
    assert get_loss("sft_retain_ul").streams == ("forget", "retain", "retain_refusal")


def npo_reference(beta: float) -> float:
    terms = [logsigmoid(-beta * (lp - ref)) for lp, ref in zip(FORGET["logps"], FORGET["ref"])]
    return -2.0 / beta * sum(terms) / len(terms)


@pytest.mark.parametrize("beta", [0.1, 0.2, 1.0])
def test_npo_matches_formula(beta):
    streams = {"forget": stream(FORGET, ref=True)}
    loss, metrics = get_loss("npo")(streams, Normalizer.of_batch(streams), beta=beta)
    assert loss.item() == pytest.approx(npo_reference(beta), rel=1e-12)
    assert metrics["npo/log_ratio"].item() == pytest.approx((-1.0 + 0.5 - 0.25) / 3)


def test_npo_at_the_reference_is_2_log2_over_beta_and_lowers_logps():
    values = {"logps": [-5.0, -7.0], "ntokens": [2.0, 3.0], "ref": [-5.0, -7.0]}
    streams = {"forget": stream(values, ref=True, grad=True)}
    loss, _ = get_loss("npo")(streams, Normalizer.of_batch(streams), beta=0.2)
    assert loss.item() == pytest.approx(2.0 / 0.2 * math.log(2.0))
    loss.backward()
    # d/d logpi of -2/beta logsigmoid(-beta x) = 2 sigmoid(beta x) = 1 at x = 0; mean over 2 rows -> 0.5 each
    assert streams["forget"].logps.grad.tolist() == pytest.approx([0.5, 0.5])


def test_npo_gd_adds_the_weighted_retain_nll():
    streams = {"forget": stream(FORGET, ref=True), "retain": stream(RETAIN)}
    loss, _ = get_loss("npo_gd")(streams, Normalizer.of_batch(streams), beta=0.2, retain_weight=2.0)
    assert loss.item() == pytest.approx(npo_reference(0.2) + 2.0 * token_nll(RETAIN))


def test_simnpo_is_length_normalised_with_margin_and_no_reference():
    beta, gamma = 2.5, 0.3
    streams = {"forget": stream(FORGET)}
    loss, _ = get_loss("simnpo")(streams, Normalizer.of_batch(streams), beta=beta, gamma=gamma)
    terms = [logsigmoid(-beta * lp / n - gamma) for lp, n in zip(FORGET["logps"], FORGET["ntokens"])]
    assert loss.item() == pytest.approx(-2.0 / beta * sum(terms) / 3)
    assert not get_loss("simnpo").needs_ref


@pytest.mark.parametrize("name", ["dpo", "idkdpo"])
def test_dpo_matches_formula(name):
    chosen = {"logps": [-20.0, -8.0], "ntokens": [5.0, 2.0], "ref": [-21.0, -7.5]}
    rejected = {"logps": [-15.0, -9.0], "ntokens": [4.0, 3.0], "ref": [-14.0, -9.5]}
    streams = {"chosen": stream(chosen, ref=True), "rejected": stream(rejected, ref=True)}
    beta = 0.1
    loss, metrics = get_loss(name)(streams, Normalizer.of_batch(streams), beta=beta)
    margins = [
        beta * ((c - cr) - (r - rr))
        for c, cr, r, rr in zip(chosen["logps"], chosen["ref"], rejected["logps"], rejected["ref"])
    ]
    assert margins == pytest.approx([0.2, -0.1])
    assert loss.item() == pytest.approx(-(logsigmoid(0.2) + logsigmoid(-0.1)) / 2)
    assert metrics["dpo/margin"].item() == pytest.approx(0.05)
    assert metrics["dpo/accuracy"].item() == pytest.approx(0.5)


def test_missing_reference_or_stream_is_an_error():
    with pytest.raises(ValueError, match="needs reference log-probs for stream 'forget'"):
        get_loss("npo")({"forget": stream(FORGET)}, Normalizer(tokens={"forget": 1.0}))
    with pytest.raises(ValueError, match=r"needs stream\(s\) \['retain'\]"):
        get_loss("gd")({"forget": stream(FORGET)}, Normalizer(tokens={"forget": 1.0}))


def test_micro_batch_shares_sum_to_the_full_batch_loss():
    """Splitting rows into micro-batches with the full batch's normalizer gives the same total (all losses)."""
    full = {"forget": stream(FORGET, ref=True), "retain": stream(RETAIN)}
    norm = Normalizer.of_batch(full)
    for name in ("sft", "sft_retain", "ga", "gd", "npo", "npo_gd", "simnpo"):
        spec = get_loss(name)
        whole, _ = spec(full, norm)
        parts = 0.0
        for rows in ([0], [1, 2]):
            micro = {
                k: StreamLogps(s.logps[rows], s.ntokens[rows], None if s.ref_logps is None else s.ref_logps[rows])
                for k, s in full.items()
            }
            parts += spec(micro, norm)[0].item()
        assert parts == pytest.approx(whole.item(), rel=1e-12), name
