"""The stage machinery behind ``run_rwku.sh`` / ``run_muse.sh`` (:mod:`RS.runner` builds the plan).

Every stage runs one of the project's own commands in a subprocess — ``python -m RS.train`` (RS, teaching,
the offline baselines), ``python -m RS.synth`` (boundary synthesis), ``python -m verl.trainer.main`` (ReBO),
``python -m verl.eval`` — printed before it runs and logged to ``<stage folder>/stage.log``, so it is the
command a user could type, and a GPU stage gives its memory and Ray workers back when it ends.

A stage counts as done only when its *last* output exists, and every output is written atomically by the
tool that makes it (HF exports are renamed into place, result JSONs go through ``write_json_atomic``,
``summary.json`` of an RS run is written after its last export), so a killed stage is never taken as done.
A rerun skips what is done; a killed ReBO run resumes from its latest complete checkpoint
(``trainer.resume``); a killed RS / baseline run starts again (its epochs are minutes to an hour).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StageError(RuntimeError):
    """A stage's command failed; the message names the stage, the exit code and the log file."""


def run_logged(argv: Sequence[str], log: Path, stage: str, env: dict[str, str] | None = None) -> None:
    """Run ``argv``, copying its output to the console and to ``log``; raise :class:`StageError` on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{stage}] $ {shlex.join(argv)}", flush=True)
    started = time.time()
    with open(log, "ab") as sink:
        sink.write(f"\n$ {shlex.join(argv)}\n".encode())
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            sink.write(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        code = proc.wait()
    if code != 0:
        raise StageError(f"stage {stage} failed (exit {code}); see {log}")
    print(f"[{stage}] done in {time.time() - started:.0f} s", flush=True)


def rs_done(run_dir: Path, epochs: Sequence[int]) -> bool:
    """An RS-trainer run is complete when ``summary.json`` (written last) and every wanted epoch export exist."""
    return (run_dir / "summary.json").is_file() and all(
        (run_dir / f"epoch_{e}" / "config.json").is_file() for e in epochs
    )


def last_epoch(run_dir: Path) -> Path:
    """The last epoch export of a finished RS-trainer run (from its ``summary.json``)."""
    exports = json.loads((run_dir / "summary.json").read_text())["exports"]
    if not exports:
        raise StageError(f"{run_dir}/summary.json lists no export")
    return Path(exports[-1])


def rebo_done(run_dir: Path) -> bool:
    """A ReBO run is complete when its HF export ``final/`` exists (renamed into place after the last step)."""
    return (run_dir / "final" / "config.json").is_file()


def result_files(eval_dir: Path, tag: str, names: Sequence[str]) -> list[Path]:
    """The result JSONs ``<eval_dir>/<tag>/<name>.json`` a finished evaluation writes (one per target)."""
    return [eval_dir / tag / f"{name}.json" for name in names]


def eval_done(files: Sequence[Path], suites: Sequence[str]) -> bool:
    """Every result file exists and ran (or knowingly skipped) every wanted suite (expanded names)."""
    for path in files:
        if not path.is_file():
            return False
        result = json.loads(path.read_text())
        if not set(suites) <= set(result.get("suites_run", [])) | set(result.get("skipped", {})):
            return False
    return True


@dataclass
class Pipeline:
    """Runs stages under ``out`` for one benchmark; records every evaluated model as ``label -> result folder``."""

    out: Path
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    dry_run: bool = False
    """Print every command instead of running it (and take its outputs as made)."""
    evaluated: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def _run(self, argv: Sequence[str], log: Path, stage: str) -> bool:
        """Run a stage's command; False in a dry run (printed only), so the caller skips its output checks."""
        if self.dry_run:
            print(f"[{stage}] would run: {shlex.join(argv)}", flush=True)
            return False
        run_logged(argv, log, stage, self.env)
        return True

    def export_of(self, run_dir: Path) -> Path:
        """The last epoch export of a finished RS-trainer run (a placeholder path in a dry run)."""
        if (run_dir / "summary.json").is_file():
            return last_epoch(run_dir)
        if self.dry_run:
            return run_dir / "epoch_LAST"
        raise StageError(f"{run_dir} is not trained yet (no summary.json): run its stage first")

    def _skip(self, stage: str, why: str) -> None:
        print(f"[{stage}] complete, skipped ({why})", flush=True)
        self.skipped.append(stage)

    def train_rs(self, stage: str, run_dir: Path, overrides: Sequence[str], epochs: Sequence[int] = ()) -> Path:
        """One ``RS.train`` run into ``run_dir`` (RS, teaching or a baseline); returns the run folder."""
        if rs_done(run_dir, epochs):
            self._skip(stage, f"{run_dir}/summary.json")
            return run_dir
        argv = [self.python, "-m", "RS.train", *overrides]
        argv += [f"trainer.output_dir={run_dir.parent}", f"trainer.experiment_name={run_dir.name}"]
        if self._run(argv, run_dir / "stage.log", stage) and not rs_done(run_dir, epochs):
            raise StageError(f"stage {stage} ended without the exports of epochs {list(epochs)} in {run_dir}")
        return run_dir

    def train_rebo(self, stage: str, run_dir: Path, overrides: Sequence[str]) -> Path:
        """One ReBO run into ``run_dir`` (resumed from its latest checkpoint); returns its ``final/`` export."""
        if rebo_done(run_dir):
            self._skip(stage, f"{run_dir}/final")
            return run_dir / "final"
        argv = [self.python, "-m", "verl.trainer.main", *overrides, "trainer.export_hf=true"]
        argv += [f"trainer.output_dir={run_dir.parent}", f"trainer.experiment_name={run_dir.name}"]
        if self._run(argv, run_dir / "stage.log", stage) and not rebo_done(run_dir):
            raise StageError(f"stage {stage} ended without {run_dir}/final")
        return run_dir / "final"

    def synthesize(self, stage: str, target_dir: Path, out_dir: Path, overrides: Sequence[str]) -> Path:
        """One ``RS.synth`` run: RULE's files for ``target_dir`` into ``out_dir`` (done when its stats exist)."""
        done = out_dir / "synthesis_stats.json"
        if done.is_file():
            self._skip(stage, str(done))
            return out_dir
        argv = [self.python, "-m", "RS.synth", "--target-dir", str(target_dir), "--out", str(out_dir), *overrides]
        if self._run(argv, out_dir / "stage.log", stage) and not done.is_file():
            raise StageError(f"stage {stage} ended without {done}")
        return out_dir

    def evaluate(self, label: str, tag: str, model: Path | str, names: Sequence[str], suites: Sequence[str],
                 args: Sequence[str], benchmark: str, run: bool = True, record: bool = True) -> None:  # fmt: skip
        """``python -m verl.eval`` of ``model`` into ``out/eval/<tag>/``; ``label`` names it in the tables.

        ``run=False`` (the eval stage not selected) only records results that are already complete;
        ``record=False`` evaluates a reference that is not a row of the tables (e.g. PrivLeak's untaught model)."""
        from verl.eval.suites import expand_suites

        eval_dir = self.out / "eval"
        stage = f"eval {label}"
        if eval_done(result_files(eval_dir, tag, names), expand_suites(benchmark, suites)):
            self._skip(stage, f"{eval_dir / tag}")
        elif not run:
            return
        else:
            argv = [self.python, "-m", "verl.eval", "--model", str(model), "--model-name", tag]
            argv += ["--benchmark", benchmark, "--suite", ",".join(suites), "--out", str(eval_dir), *args]
            if self._run(argv, eval_dir / tag / "stage.log", stage):
                missing = [p for p in result_files(eval_dir, tag, names) if not p.is_file()]
                if missing:
                    raise StageError(f"stage {stage} ended without {missing[0]}")
        if record:
            self.evaluated[label] = eval_dir / tag

    def table(self, reference: str | None, refusal_detector: str = "strict") -> list[Path]:
        """Every evaluated model into ``out/tables/`` (RWKU Table 1, naturalness, MUSE, Pareto plot); refusal
        figures by ``refusal_detector`` (results judged by another are re-judged, see ``verl.eval.collect``)."""
        from verl.eval.collect import collect

        print(f"[table] {len(self.evaluated)} models -> {self.out / 'tables'}", flush=True)
        ref = reference if reference in self.evaluated and refusal_detector != "judge" else None
        written = collect(
            [], self.out / "tables", labels=self.evaluated, reference=ref, refusal_detector=refusal_detector
        )
        for path in written:
            if path.suffix == ".md":
                print(f"\n## {path.name}\n\n{path.read_text(encoding='utf-8')}", flush=True)
        return written
