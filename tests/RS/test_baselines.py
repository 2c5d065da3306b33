"""RS.baselines: the strengths in each baseline YAML (one source for RS.runner and data.demo)."""

import math

import pytest
import yaml

from RS.baselines import (
    BASELINE_DIR,
    BASELINES,
    PROFILES,
    Strength,
    as_overrides,
    check_strengths,
    read_strengths,
)
from RS.config import RSConfig
from RS.trainer import epoch_batches
from verl.utils.config import ConfigError, load_config
from verl.utils.lr_scheduler import resolve_warmup_steps

# profile -> the methods that must have strengths there (the runner's defaults and the demo's)
REQUIRED = {
    "rwku-gpu": ["ga", "gd", "npo", "npo_gd", "simnpo", "rt", "dpo", "idkdpo"],
    "rwku-cpu": ["ga", "gd", "npo", "npo_gd", "simnpo", "rt", "dpo", "idkdpo"],
    "muse-gpu": ["ga", "npo", "simnpo", "rt"],
    "muse-cpu": ["ga", "npo", "simnpo"],
    "demo": ["ga", "gd", "npo", "dpo", "rt"],
}


def load_strength(method: str, strength: Strength, cpu: bool = False) -> RSConfig:
    overrides = [f"config={BASELINE_DIR / BASELINES[method][0]}", f"loss.name={method}"]
    if cpu:  # the runner's CPU placement / the demo's
        overrides += ["trainer.n_gpus_per_node=0", "trainer.n_workers=1", "trainer.backend=inprocess"]
    overrides += as_overrides(strength.overrides)
    if method.endswith("gd"):
        overrides.append("data.retain_files=x.json")
    return load_config(RSConfig, overrides)


@pytest.mark.parametrize("profile", sorted(REQUIRED))
def test_every_strength_is_a_valid_override_and_a_frontier_has_three(profile):
    for method in REQUIRED[profile]:
        strengths = read_strengths(method, profile)
        points = sum(len(s.epochs) or 1 for s in strengths)  # points: epochs -> one point per epoch of a run
        assert points >= 3, f"{profile}.{method}: a frontier needs at least 3 strengths"
        assert len({s.tag for s in strengths}) == len(strengths)
        configs = [load_strength(method, s, cpu=not profile.endswith("gpu")) for s in strengths]
        for strength, config in zip(strengths, configs):
            assert strength.epochs in ([], list(range(1, config.trainer.epochs + 1)))
        if len(strengths) > 1:  # the sweep changes lr or epochs, monotonically (a curve ordered by strength)
            lrs = [c.optim.lr for c in configs]
            epochs = [c.trainer.epochs for c in configs]
            assert lrs == sorted(lrs) and epochs == sorted(epochs) and (len(set(lrs)) > 1 or len(set(epochs)) > 1)


def test_the_gpu_profile_brackets_the_papers_lr():
    """rwku-gpu: the YAML's own lr (RWKU's setting) is the middle strength, half and double around it."""
    for method in ("ga", "npo", "rt", "dpo"):
        paper = load_config(RSConfig, [f"config={BASELINE_DIR / BASELINES[method][0]}"]).optim.lr
        lrs = [load_strength(method, s).optim.lr for s in read_strengths(method, "rwku-gpu")]
        assert lrs == pytest.approx([paper / 2, paper, paper * 2])


def warmup_and_steps(cfg: RSConfig, rows: int) -> tuple[int, int]:
    steps = len(epoch_batches(rows, cfg.trainer.batch_size, 1, 0, 0, True)) * cfg.trainer.epochs
    return resolve_warmup_steps(cfg.optim.lr_warmup_steps, cfg.optim.lr_warmup_ratio, steps), steps


@pytest.mark.parametrize(
    "profile, method, rows",
    [("muse-cpu", "ga", 2), ("muse-cpu", "npo", 2), ("rwku-cpu", "ga", 14), ("rwku-cpu", "npo", 14),
     ("demo", "ga", 12), ("demo", "dpo", 12)],
)  # fmt: skip
def test_cpu_runs_reach_their_lr_warmup_is_a_small_share_of_the_steps(profile, method, rows):
    """The embedded book packs into 2 blocks, RWKU target 1's first 16 bios into about 14: 20 warmup steps
    (the 8B setting) would leave such runs below their lr; warmup here is at most 10% of each run's optimizer steps."""
    for strength in read_strengths(method, profile):
        warmup, steps = warmup_and_steps(load_strength(method, strength, cpu=True), rows)
        assert steps >= 3 and warmup <= math.ceil(0.1 * steps), (strength.tag, warmup, steps)
    if profile == "muse-cpu":  # more optimizer steps than the 2 the old sweep gave
        runs = [warmup_and_steps(load_strength(method, s, cpu=True), rows)[1] for s in read_strengths(method, profile)]
        assert max(runs) >= 20


def test_strength_tag_label_and_common_overrides():
    (strength,) = check_strengths({"demo": {"common": {"trainer.epochs": 3}, "sweep": [{"optim.lr": 3e-5}]}}, "x")[
        "demo"
    ]
    assert strength.tag == "lr3e-05" and strength.label == "lr 3e-05"
    assert strength.overrides == {"trainer.epochs": 3, "optim.lr": 3e-5}
    two = Strength({"optim.lr": 3e-5, "trainer.epochs": 2}, {})
    assert two.tag == "lr3e-05_epochs2" and two.label == "lr 3e-05, epochs 2"
    assert strength.epochs == [] and not strength.every_epoch  # points: runs (the default): the last export only
    (each,) = check_strengths({"demo": {"common": {"trainer.epochs": 3}, "points": "epochs",
                                        "sweep": [{"optim.lr": 3e-5}]}}, "x")["demo"]  # fmt: skip
    assert each.every_epoch and each.epochs == [1, 2, 3] and each.tag == "lr3e-05"


def test_as_overrides_keep_strings_with_spaces_and_colons():
    args = as_overrides({"data.response_prefix": "Answer: ", "optim.lr": 1e-5, "data.packing": False})
    cfg = load_config(RSConfig, ["model.model_path=x", "data.train_files=y.json", *args])
    assert cfg.data.response_prefix == "Answer: " and cfg.optim.lr == 1e-5 and cfg.data.packing is False


@pytest.mark.parametrize(
    "tree, message",
    [
        ({"rwku-tpu": {"sweep": [{"optim.lr": 1}]}}, r"strengths.rwku-tpu: unknown profile"),
        ({"demo": [{"optim.lr": 1}]}, r"strengths.demo must be a mapping with a 'sweep' list"),
        ({"demo": {"sweep": []}}, r"strengths.demo.sweep must be a non-empty list"),
        ({"demo": {"sweep": [{"lr": 1}]}}, r"strengths.demo.sweep\[0\] must be a mapping of dotted config keys"),
        ({"demo": {"sweep": [{"optim.lr": 1}, {"optim.lr": 1}]}}, r"must be non-empty and distinct"),
        ({"demo": {"common": {"optim.lr": [1]}, "sweep": [{"optim.lr": 1}]}}, r"common: values must be scalars"),
        ({"demo": {"points": "steps", "sweep": [{"optim.lr": 1}]}}, r"strengths.demo.points must be 'runs'"),
        (
            {"demo": {"points": "epochs", "sweep": [{"optim.lr": 1}]}},
            r"sweep\[0\]: points: epochs needs trainer.epochs",
        ),
    ],
)
def test_bad_strengths_are_one_line_errors(tree, message):
    with pytest.raises(ValueError, match=message) as error:
        check_strengths(tree, "ga.yaml")
    assert "\n" not in str(error.value) and str(error.value).startswith("ga.yaml: ")


def test_a_yaml_with_bad_strengths_does_not_load_and_a_missing_profile_is_named(tmp_path):
    ga = yaml.safe_load((BASELINE_DIR / "ga.yaml").read_text())
    ga["strengths"] = {"demo": {"sweep": [{"optim.lr": 1e-5}]}}
    (tmp_path / "ga.yaml").write_text(yaml.safe_dump(ga))
    with pytest.raises(ValueError, match=r"no strengths for baseline 'ga' in profile 'muse-cpu' \(has \['demo'\]\)"):
        read_strengths("ga", "muse-cpu", tmp_path)
    ga["strengths"] = {"demo": {"sweep": [{"optim.lr": 1e-5}], "extra": 1}}
    (tmp_path / "ga.yaml").write_text(yaml.safe_dump(ga))
    with pytest.raises(ConfigError, match=r"strengths.demo must be a mapping"):
        load_config(RSConfig, [f"config={tmp_path / 'ga.yaml'}"])
    with pytest.raises(ValueError, match=r"unknown baseline 'gaa' \(--baselines\); choose from ga, gd"):
        read_strengths("gaa", "demo")


def test_every_profile_name_in_the_yamls_is_known():
    for config in sorted({c for c, _ in BASELINES.values()}):
        tree = yaml.safe_load((BASELINE_DIR / config).read_text())["strengths"]
        assert set(tree) <= set(PROFILES), config
