"""BestCheckpointCriterion rules and TrainingEvaluator's flat metric names."""

from __future__ import annotations

import json

import pytest

from tests.eval.helpers import rouge_package_recall
from verl.eval.generator import CallableGenerator
from verl.eval.hook import BestCheckpointCriterion, TrainingEvaluator


def test_min_mode_with_constraint():
    criterion = BestCheckpointCriterion("val/rwku/forget_all", "min", ["val/rwku/neighbor_all>=0.8"])
    good = {"val/rwku/forget_all": 0.3, "val/rwku/neighbor_all": 0.85}
    assert criterion.is_better(good, None)
    assert criterion.is_better(good, {})
    assert criterion.is_better(good, {"val/rwku/forget_all": 0.4, "val/rwku/neighbor_all": 0.9})
    assert not criterion.is_better(good, {"val/rwku/forget_all": 0.3, "val/rwku/neighbor_all": 0.9})  # tie
    assert not criterion.is_better(good, {"val/rwku/forget_all": 0.2, "val/rwku/neighbor_all": 0.9})
    too_low = {"val/rwku/forget_all": 0.1, "val/rwku/neighbor_all": 0.79}
    assert not criterion.is_better(too_low, None) and not criterion.satisfies(too_low)
    assert criterion.is_better({"val/rwku/forget_all": 0.1, "val/rwku/neighbor_all": 0.8}, good)  # >= boundary


def test_max_mode_and_operators():
    criterion = BestCheckpointCriterion("val/reward", "max", ["a<1", "b > -2.5e-1", "c!=0", "d==3", "e<=1e3"])
    metrics = {"val/reward": 0.7, "a": 0.5, "b": 0.0, "c": 1.0, "d": 3.0, "e": 1000.0}
    assert criterion.is_better(metrics, {"val/reward": 0.6})
    assert not criterion.is_better(metrics, {"val/reward": 0.8})
    assert not criterion.is_better(dict(metrics, b=-0.3), None)
    assert not criterion.is_better(dict(metrics, **{"val/reward": float("nan")}), None)


@pytest.mark.parametrize("bad", ["val/x >= ", "val/x => 0.8", ">=0.8", "val/x >= high", "val/x"])
def test_bad_constraint_is_named(bad):
    with pytest.raises(ValueError, match="bad best-checkpoint constraint " + repr(bad).replace("[", r"\[")):
        BestCheckpointCriterion("val/x", "max", [bad])


def test_missing_metric_and_bad_mode():
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        BestCheckpointCriterion("m", "lowest")
    criterion = BestCheckpointCriterion("val/rwku/forget_all", "min", ["val/rwku/neighbor_all>=0.5"])
    with pytest.raises(ValueError, match="'val/rwku/neighbor_all' is not among the validation metrics"):
        criterion.is_better({"val/rwku/forget_all": 0.1}, None)


def test_training_evaluator_flat_metrics(shared_data, tiny_tokenizer, tmp_path):
    answers = {}
    for target in ("1_Stephen_King", "2_Confucius"):
        folder = shared_data / "rwku" / "Target" / target
        for name in ("forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2"):
            answers.setdefault(target, {})[name] = [
                p["answer"] for p in json.loads((folder / f"{name}.json").read_text())
            ]
    reply = "Stephen King, Confucius"
    generator = CallableGenerator(tiny_tokenizer, lambda prompts, sampling: [reply] * len(prompts))
    evaluator = TrainingEvaluator(
        "rwku", shared_data / "rwku", "1-2", ["forget", "neighbor"], out_dir=tmp_path, per_target=True
    )
    metrics = evaluator(generator, step=7)
    pooled = {}
    for target, files in answers.items():
        forget = [
            rouge_package_recall(reply, a)
            for n in ("forget_level1", "forget_level2", "forget_level3")
            for a in files[n]
        ]
        neighbor = [rouge_package_recall(reply, a) for n in ("neighbor_level1", "neighbor_level2") for a in files[n]]
        pooled[target] = (sum(forget) / len(forget), sum(neighbor) / len(neighbor))
        assert metrics[f"val/rwku/{target}/forget_all"] == pytest.approx(pooled[target][0])
    assert metrics["val/rwku/forget_all"] == pytest.approx(sum(p[0] for p in pooled.values()) / 2)
    assert metrics["val/rwku/neighbor_all"] == pytest.approx(sum(p[1] for p in pooled.values()) / 2)
    assert all(isinstance(v, float) for v in metrics.values())
    saved = json.loads((tmp_path / "step7" / "1_Stephen_King.json").read_text())
    assert saved["step"] == 7 and saved["metrics"]["forget_all"] == pytest.approx(pooled["1_Stephen_King"][0])
    with pytest.raises(ValueError, match="unknown rwku evaluation suite"):
        TrainingEvaluator("rwku", shared_data / "rwku", "1", ["forgett"])
