"""The offline baselines and the strengths each one runs at: one source for ``RS.runner`` and ``data.demo``.

A method's YAML in ``examples/baselines/`` holds its training settings (the paper's, for an 8B model) and a
``strengths:`` section that ``RS.train`` ignores: per profile (:data:`PROFILES`) an optional ``common`` dict of
overrides and a ``sweep`` list of override dicts, each one training run from the model before unlearning::

    strengths:
      rwku-cpu:
        common: {trainer.epochs: 1}
        sweep: [{optim.lr: 1.0e-5}, {optim.lr: 3.0e-5}, {optim.lr: 1.0e-4}]
      demo:
        common: {trainer.epochs: 3}
        points: epochs      # each epoch's export is one point: one run, three points
        sweep: [{optim.lr: 1.0e-4}]

:func:`read_strengths` turns a section into :class:`Strength` objects (``common`` + one ``sweep`` entry); a
run is named by its ``sweep`` entry alone (:attr:`Strength.tag`, e.g. ``lr3e-05``), so each method is drawn
as a curve over its sweep. With ``points: epochs`` (default ``points: runs``) a run is also evaluated after
every epoch (``trainer.epochs`` must be set in ``common`` or the entry), each epoch's export one point, as MUSE
evaluates its baselines' checkpoints and RULE's curve its RS epochs: fewer runs for the same curve. ICU (RWKU's in-context unlearning instruction) trains nothing and has no strength:
it is one evaluation of the model before unlearning with ``--icu`` (:data:`UNTRAINED`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINE_DIR = Path(__file__).resolve().parents[1] / "examples" / "baselines"
# method -> (config in BASELINE_DIR, training file in a target's folder); gd / npo_gd also need retain rows.
BASELINES = {
    "ga": ("ga.yaml", "positive.json"), "gd": ("gd.yaml", "positive.json"), "npo": ("npo.yaml", "positive.json"),
    "npo_gd": ("npo.yaml", "positive.json"), "simnpo": ("simnpo.yaml", "positive.json"),
    "dpo": ("dpo.yaml", "pair.json"), "idkdpo": ("idkdpo.yaml", "pair.json"), "rt": ("rt.yaml", "reject.json"),
}  # fmt: skip
UNTRAINED = ("icu",)
PROFILES = ("rwku-gpu", "rwku-cpu", "muse-gpu", "muse-cpu", "demo")
"""rwku/muse x gpu/cpu: the runner's profiles (``RS.runner``); demo: ``data.demo`` on the embedded benchmark."""


@dataclass(frozen=True)
class Strength:
    """One training run of a baseline: ``sweep`` (what varies along the curve) over ``common`` (the profile's)."""

    sweep: dict[str, Any]
    common: dict[str, Any]
    every_epoch: bool = False
    """``points: epochs``: every epoch's export is a point of the curve, not only the last one."""

    @property
    def overrides(self) -> dict[str, Any]:
        return {**self.common, **self.sweep}

    @property
    def tag(self) -> str:
        """{'optim.lr': 3e-05, 'trainer.epochs': 2} -> 'lr3e-05_epochs2' (a file-system-safe, readable name)."""
        return "_".join(f"{key.rsplit('.', 1)[-1]}{value}" for key, value in self.sweep.items()).replace("/", "-")

    @property
    def label(self) -> str:
        """{'optim.lr': 3e-05, 'trainer.epochs': 2} -> 'lr 3e-05, epochs 2' (for plots and tables)."""
        return ", ".join(f"{key.rsplit('.', 1)[-1]} {value}" for key, value in self.sweep.items())

    @property
    def train_args(self) -> list[str]:
        """The ``key=value`` arguments of this run: its overrides, and every epoch exported with ``points: epochs``."""
        return [*as_overrides(self.overrides), f"trainer.save_every_epoch={str(self.every_epoch).lower()}"]

    @property
    def epochs(self) -> list[int]:
        """The epochs whose exports are points: all of them with ``points: epochs``, else none (the last one)."""
        return list(range(1, int(self.overrides["trainer.epochs"]) + 1)) if self.every_epoch else []


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``{"optim.lr": 1e-05, "data.response_prefix": "Answer: "}`` -> ``key=value`` arguments of ``load_config``;
    strings, lists and dicts as JSON, so that YAML reads them back unchanged ("Answer: " stays a string)."""
    return [f"{key}={json.dumps(v) if isinstance(v, (str, list, dict)) else v}" for key, v in values.items()]


def baseline_config(method: str) -> Path:
    """The YAML ``method`` trains with (``KeyError``-free: a ``ValueError`` naming the known methods)."""
    if method not in BASELINES:
        known = ", ".join([*BASELINES, *UNTRAINED])
        raise ValueError(f"unknown baseline {method!r} (--baselines); choose from {known}")
    return BASELINE_DIR / BASELINES[method][0]


def _override_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and "." in k for k in value):
        raise ValueError(f"{where} must be a mapping of dotted config keys to values, e.g. {{optim.lr: 1.0e-5}}")
    if any(isinstance(v, (dict, list)) for v in value.values()):
        raise ValueError(f"{where}: values must be scalars (one key per override), got {value!r}")
    return dict(value)


def check_strengths(tree: Any, where: str) -> dict[str, list[Strength]]:
    """Validate a ``strengths:`` tree; returns ``{profile: [Strength, ...]}``. Errors name ``where`` and the key."""
    if not isinstance(tree, dict):
        raise ValueError(f"{where}: strengths must map a profile ({', '.join(PROFILES)}) to {{common, sweep}}")
    parsed = {}
    for profile, section in tree.items():
        at = f"{where}: strengths.{profile}"
        if profile not in PROFILES:
            raise ValueError(f"{at}: unknown profile; choose from {', '.join(PROFILES)}")
        if not isinstance(section, dict) or set(section) - {"common", "sweep", "points"} or "sweep" not in section:
            raise ValueError(f"{at} must be a mapping with a 'sweep' list, an optional 'common' mapping and "
                             "optional 'points' (runs | epochs)")  # fmt: skip
        points = section.get("points", "runs")
        if points not in ("runs", "epochs"):
            raise ValueError(
                f"{at}.points must be 'runs' (one point per run) or 'epochs' (one per epoch), got {points!r}"
            )
        sweep = section["sweep"]
        if not isinstance(sweep, list) or not sweep:
            raise ValueError(f"{at}.sweep must be a non-empty list of {{key: value}} overrides")
        common = _override_dict(section.get("common") or {}, f"{at}.common")
        runs = [
            Strength(_override_dict(entry, f"{at}.sweep[{i}]"), common, every_epoch=points == "epochs")
            for i, entry in enumerate(sweep)
        ]
        for i, run in enumerate(runs):
            epochs = run.overrides.get("trainer.epochs")
            if run.every_epoch and (type(epochs) is not int or epochs < 1):
                raise ValueError(f"{at}.sweep[{i}]: points: epochs needs trainer.epochs (an integer >= 1) in "
                                 f"common or the entry, got {epochs!r}")  # fmt: skip
        tags = [run.tag for run in runs]
        if any(not run.sweep for run in runs) or len(set(tags)) != len(tags):
            raise ValueError(f"{at}.sweep: every entry must be non-empty and distinct, got tags {tags}")
        parsed[profile] = runs
    return parsed


def read_strengths(method: str, profile: str, folder: Path = BASELINE_DIR) -> list[Strength]:
    """The runs ``method`` makes in ``profile`` (``rwku-cpu``, ``demo``, ...), from its YAML in ``folder``."""
    import yaml

    path = folder / baseline_config(method).name
    tree = (yaml.safe_load(path.read_text()) or {}).get("strengths")
    if tree is None:
        raise ValueError(f"{path}: no 'strengths:' section (the runs of baseline {method!r})")
    sections = check_strengths(tree, str(path))
    if profile not in sections:
        raise ValueError(
            f"{path}: no strengths for baseline {method!r} in profile {profile!r} (has {sorted(sections)})"
        )
    return sections[profile]
