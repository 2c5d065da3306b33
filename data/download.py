"""Fetch RWKU and MUSE-Books into the on-disk layouts the evaluators read.

RWKU (``jinzhuoran/RWKU``, CC-BY-4.0) -> ``<cache_dir>/rwku/``::

    all_intro.json                      {"Stephen King": [intro, ...], ...}: the 200 targets in order
    Target/<n>_<Name>/<file>.json       e.g. Target/1_Stephen_King/forget_level1.json

MUSE-Books (``muse-bench/MUSE-Books``) -> ``<cache_dir>/muse/books/``::

    knowmem/{forget_qa,retain_qa,forget_qa_icl,retain_qa_icl}.json   [{"question", "answer"}]
    verbmem/forget.json                                               [{"prompt", "gt"}]
    privleak/{forget,retain,holdout}.json                             [str]

A ``local_dir`` in the same layout (e.g. ``../shared/data/rwku``) is used first: when it holds every
requested file it is returned as is (no copy, no network); otherwise its files are copied into the cache
and only the rest is downloaded. RULE's own files (``idk_target``, ``reject_target``, ``rl_rejection_*``)
are not on the RWKU hub: they come from ``local_dir`` only. Files are written atomically (temp + rename).
With ``HF_HUB_OFFLINE=1`` (or no connection) missing files raise :class:`DataNotAvailableError` naming
them and the command that fetches them. MUSE book prose (VerbMem, PrivLeak) is downloaded at run time
only and must never be committed or bundled.

CLI: ``python -m data.download rwku --targets 1-10 --cache-dir DIR`` / ``python -m data.download muse --cache-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from verl.utils.fileio import atomic_path, write_json_atomic
from verl.utils.rwku_targets import Target, TargetSpec, known_targets, match_targets

RWKU_REPO_ID = "jinzhuoran/RWKU"
MUSE_BOOKS_REPO_ID = "muse-bench/MUSE-Books"

RWKU_FILE_GROUPS: dict[str, tuple[str, ...]] = {
    "probes": ("intro", "forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2"),
    "mia": ("forget_mia", "retain_mia"),
    "utility": ("retain_mmlu", "retain_bbh", "truthful", "triviaqa", "fluency"),
    "train": ("positive", "negative", "pair", "reject", "passage"),
    "train_phi": ("positive_phi", "negative_phi", "pair_phi", "reject_phi"),
    "rule": (
        "idk_target",
        "reject_target",
        "reject_with_fb_neighbor_target",
        "rl_rejection_with_fb_neighbor_target",
        "rl_rejection_eval_target",
    ),
}
DEFAULT_RWKU_FILES: tuple[str, ...] = RWKU_FILE_GROUPS["probes"] + RWKU_FILE_GROUPS["mia"]
RULE_ONLY_FILES = frozenset(RWKU_FILE_GROUPS["rule"])

# relative path -> (datasets config, split, fields kept; None = the "text" field as a plain string)
MUSE_BOOKS_FILES: dict[str, tuple[str, str, Optional[tuple[str, ...]]]] = {
    "knowmem/forget_qa.json": ("knowmem", "forget_qa", ("question", "answer")),
    "knowmem/retain_qa.json": ("knowmem", "retain_qa", ("question", "answer")),
    "knowmem/forget_qa_icl.json": ("knowmem", "forget_qa_icl", ("question", "answer")),
    "knowmem/retain_qa_icl.json": ("knowmem", "retain_qa_icl", ("question", "answer")),
    "verbmem/forget.json": ("verbmem", "forget", ("prompt", "gt")),
    "privleak/forget.json": ("privleak", "forget", None),
    "privleak/retain.json": ("privleak", "retain", None),
    "privleak/holdout.json": ("privleak", "holdout", None),
}
MUSE_PARTS = ("knowmem", "verbmem", "privleak")
MUSE_RULE_FILES = ("idk_target.json", "rl_rejection_eval_target.json")  # copied from local_dir when present

SHOWN_MISSING = 5


class DataNotAvailableError(FileNotFoundError):
    """Benchmark files are missing and cannot be downloaded now; the message says which and how to get them."""


# ----------------------------------------------------------------------------- RWKU
def expand_rwku_files(files: Union[str, Sequence[str]]) -> list[str]:
    """File stems from names and group names (``"probes,mia"``, ``["forget_level1.json"]``), order kept."""
    items = files.split(",") if isinstance(files, str) else list(files)
    stems: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        group = RWKU_FILE_GROUPS.get(item)
        for stem in group if group is not None else (item.removesuffix(".json"),):
            if "/" in stem or "\\" in stem:
                raise ValueError(f"RWKU file name {item!r} must be a bare name like 'forget_level1', not a path")
            if stem not in stems:
                stems.append(stem)
    if not stems:
        raise ValueError(f"no RWKU files requested in {files!r}; groups: {', '.join(RWKU_FILE_GROUPS)}")
    return stems


def fetch_rwku(
    targets_spec: TargetSpec,
    cache_dir: Union[str, Path],
    files: Union[str, Sequence[str]] = DEFAULT_RWKU_FILES,
    local_dir: Optional[Union[str, Path]] = None,
    repo_id: str = RWKU_REPO_ID,
    optional: Union[str, Sequence[str]] = (),
) -> Path:
    """Make the RWKU ``files`` of the targets in ``targets_spec`` available; return the layout's root folder.

    ``targets_spec`` is as in :mod:`verl.utils.rwku_targets` ("1-10", "Stephen King", ...). The result is
    ``local_dir`` when it already holds everything, else ``<cache_dir>/rwku``. ``optional`` (names or groups,
    e.g. ``"rule"``): files taken where a target has them (``local_dir`` or the cache), never downloaded and
    never an error when missing: RULE released its own files for 50 of RWKU's 200 targets, and the runner's
    ``synth`` stage builds them for the others.
    """
    stems = expand_rwku_files(files)
    extra = [stem for stem in expand_rwku_files(optional) if stem not in stems] if optional else []
    root = Path(cache_dir) / "rwku"
    local = _checked_local_dir(local_dir)
    targets = _resolve_rwku_targets(targets_spec, root, local, repo_id)
    needed = [f"Target/{t.dirname}/{stem}.json" for t in targets for stem in stems]
    if local is not None and all((local / rel).is_file() for rel in needed):
        return local
    for rel in (f"Target/{t.dirname}/{stem}.json" for t in targets for stem in extra):
        if local is not None and (local / rel).is_file() and not (root / rel).is_file():
            atomic_copy(local / rel, root / rel)

    missing = []
    for rel in needed:
        if (root / rel).is_file():
            continue
        if local is not None and (local / rel).is_file():
            atomic_copy(local / rel, root / rel)
        else:
            missing.append(rel)
    if local is not None and (local / "all_intro.json").is_file() and not (root / "all_intro.json").is_file():
        atomic_copy(local / "all_intro.json", root / "all_intro.json")

    rule_missing = [rel for rel in missing if Path(rel).stem in RULE_ONLY_FILES]
    if rule_missing:
        raise DataNotAvailableError(
            f"RULE's own files are not on the RWKU hub ({repo_id}) and were not found in "
            f"{local if local is not None else 'any local_dir (none given)'}: {_listing(rule_missing)}. Pass "
            "--local-dir / local_dir= pointing to a folder in the RWKU layout that holds them, e.g. "
            "../shared/data/rwku or the RULE-Unlearn release's data/RWKU."
        )
    if missing:
        command = _rwku_command(targets_spec, cache_dir, stems)
        for rel in missing:
            _hub_download(repo_id, rel, root, missing, command)
    return root


def _resolve_rwku_targets(spec: TargetSpec, root: Path, local: Optional[Path], repo_id: str) -> list[Target]:
    """Targets named by ``spec``, known from local_dir, the cache, or (if needed) the hub's target list."""
    candidates = _merged_targets(root, local)
    try:
        return match_targets(spec, candidates)
    except ValueError as error:
        if any(d is not None and (d / "all_intro.json").is_file() for d in (root, local)):
            raise  # the full list of 200 targets is known: the spec is wrong, not the cache incomplete
        first_error = error
    command = _rwku_command(spec, root.parent, DEFAULT_RWKU_FILES)
    intro_path = _hub_download(repo_id, "All/intro.json", root, ["All/intro.json"], command, first_error)
    write_json_atomic(root / "all_intro.json", _all_intro_from_hub(intro_path))
    return match_targets(spec, _merged_targets(root, local))


def _merged_targets(root: Path, local: Optional[Path]) -> list[Target]:
    merged = {t.index: t for t in known_targets(root)}
    if local is not None:
        merged.update({t.index: t for t in known_targets(local)})
    return [merged[i] for i in sorted(merged)]


def _all_intro_from_hub(path: Path) -> dict[str, list[str]]:
    """RWKU's ``{name: [intro]}`` from the hub's ``All/intro.json`` (records ``{"target", "intro"}``, JSON or JSONL)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    result: dict[str, list[str]] = {}
    for row, record in enumerate(records):
        if not isinstance(record, dict) or "target" not in record:
            raise ValueError(f"{path}: row {row} has no 'target' field")
        result.setdefault(record["target"], []).append(record.get("intro", ""))
    return result


def _rwku_command(spec: TargetSpec, cache_dir: Union[str, Path], stems: Sequence[str]) -> str:
    targets = spec if isinstance(spec, (str, int)) else ",".join(str(s) for s in spec)
    command = (
        f"python -m data.download rwku --targets {shlex.quote(str(targets))} --cache-dir {shlex.quote(str(cache_dir))}"
    )
    if list(stems) != list(DEFAULT_RWKU_FILES):
        command += f" --files {','.join(stems)}"
    return command


# ----------------------------------------------------------------------------- MUSE-Books
def fetch_muse_books(
    cache_dir: Union[str, Path],
    local_dir: Optional[Union[str, Path]] = None,
    repo_id: str = MUSE_BOOKS_REPO_ID,
    parts: Union[str, Sequence[str]] = MUSE_PARTS,
) -> Path:
    """Make MUSE-Books' evaluation files (``parts`` of knowmem / verbmem / privleak) available; return the root.

    The result is ``local_dir`` when it holds everything, else ``<cache_dir>/muse/books``. Downloads use
    ``datasets.load_dataset(repo_id, config, split=...)``. RULE's MUSE files (``idk_target.json``,
    ``rl_rejection_eval_target.json``) are copied from ``local_dir`` when present.
    """
    wanted = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
    unknown = sorted(set(wanted) - set(MUSE_PARTS))
    if unknown or not wanted:
        raise ValueError(f"unknown MUSE parts {unknown or wanted!r}; choose from: {', '.join(MUSE_PARTS)}")
    root = Path(cache_dir) / "muse" / "books"
    local = _checked_local_dir(local_dir)
    needed = [rel for rel in MUSE_BOOKS_FILES if rel.split("/")[0] in wanted]
    if local is not None and all((local / rel).is_file() for rel in needed):
        return local

    missing = []
    for rel in needed:
        if (root / rel).is_file():
            continue
        if local is not None and (local / rel).is_file():
            atomic_copy(local / rel, root / rel)
        else:
            missing.append(rel)
    for rel in MUSE_RULE_FILES:
        if local is not None and (local / rel).is_file() and not (root / rel).is_file():
            atomic_copy(local / rel, root / rel)

    command = f"python -m data.download muse --cache-dir {shlex.quote(str(cache_dir))} --parts {','.join(wanted)}"
    if missing and _offline("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        raise DataNotAvailableError(_missing_message("MUSE-Books", root, missing, repo_id, command, _OFFLINE_REASON))
    for rel in missing:
        config, split, fields = MUSE_BOOKS_FILES[rel]
        try:
            import datasets

            rows = datasets.load_dataset(repo_id, config, split=split)
        except Exception as error:  # network, auth and "not found" errors all end the same way here
            reason = f"load_dataset({repo_id!r}, {config!r}, split={split!r}) failed: {type(error).__name__}: {error}"
            raise DataNotAvailableError(
                _missing_message("MUSE-Books", root, missing, repo_id, command, reason)
            ) from error
        write_json_atomic(root / rel, _muse_records(rows, fields, f"{repo_id}/{config}/{split}"))
    return root


def _muse_records(rows, fields: Optional[tuple[str, ...]], where: str) -> list[Any]:
    records: list[Any] = []
    for index, row in enumerate(rows):
        keys = fields or ("text",)
        absent = [k for k in keys if k not in row]
        if absent:
            raise ValueError(f"{where}: row {index} lacks field(s) {absent}")
        records.append({k: row[k] for k in keys} if fields else row["text"])
    return records


# ----------------------------------------------------------------------------- shared helpers
_OFFLINE_REASON = "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)"


def _offline(*variables: str) -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in variables)


def _hub_download(
    repo_id: str, rel: str, dest_root: Path, missing: Sequence[str], command: str, context: Optional[Exception] = None
) -> Path:
    """Download dataset file ``rel`` of ``repo_id`` to ``dest_root/rel``; on failure list ``missing``."""
    prefix = f"{context}. " if context is not None else ""
    if _offline("HF_HUB_OFFLINE"):
        raise DataNotAvailableError(
            prefix + _missing_message("RWKU", dest_root, missing, repo_id, command, _OFFLINE_REASON)
        )
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        path = Path(huggingface_hub.hf_hub_download(repo_id, rel, repo_type="dataset", local_dir=str(dest_root)))
    except LocalEntryNotFoundError as error:  # offline mode or no connection, and nothing cached
        reason = f"cannot reach the Hugging Face Hub ({type(error).__name__}: {error})"
        raise DataNotAvailableError(
            prefix + _missing_message("RWKU", dest_root, missing, repo_id, command, reason)
        ) from error
    except EntryNotFoundError as error:
        raise DataNotAvailableError(f"{rel} is not in the Hugging Face dataset {repo_id}: {error}") from error
    except Exception as error:  # connection errors come as OSError / httpx errors depending on the version
        reason = f"download of {rel} failed ({type(error).__name__}: {error})"
        raise DataNotAvailableError(
            prefix + _missing_message("RWKU", dest_root, missing, repo_id, command, reason)
        ) from error
    target = dest_root / rel
    if path.resolve() != target.resolve():
        atomic_copy(path, target)
    return target


def _missing_message(what: str, root: Path, missing: Sequence[str], repo_id: str, command: str, reason: str) -> str:
    return (
        f"{what} data incomplete in {root}: {_listing(missing)}; {reason}. Get them with `{command}` while online "
        f"(downloads from the Hugging Face dataset {repo_id}), or pass --local-dir / local_dir= pointing to a "
        f"folder in the same layout, e.g. ../shared/data/{'rwku' if what == 'RWKU' else 'muse/books'}."
    )


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:SHOWN_MISSING])
    more = f" and {len(paths) - SHOWN_MISSING} more" if len(paths) > SHOWN_MISSING else ""
    return f"{len(paths)} file(s) missing: {shown}{more}"


def _checked_local_dir(local_dir: Optional[Union[str, Path]]) -> Optional[Path]:
    if local_dir is None:
        return None
    local = Path(local_dir).expanduser()
    if not local.is_dir():
        raise FileNotFoundError(f"local_dir {local} is not a directory")
    return local


def atomic_copy(src: Union[str, Path], dst: Union[str, Path]) -> None:
    """Copy ``src`` to ``dst`` through a temp file beside ``dst``: readers never see a partial file."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


# ----------------------------------------------------------------------------- CLI
def _default_cache_dir() -> Path:
    from verl.utils.models import default_cache_dir

    return default_cache_dir() / "data"


def main(argv: Optional[list[str]] = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m data.download",
        description="Download RWKU / MUSE-Books into the layouts RULE's evaluators read; prints the data folder.",
    )
    commands = parser.add_subparsers(dest="benchmark", required=True)
    rwku = commands.add_parser("rwku", help=f"RWKU per-target files from {RWKU_REPO_ID} (CC-BY-4.0)")
    rwku.add_argument("--targets", required=True, help='targets: "1-10", "1,3,5-7", "Stephen King", "all"')
    rwku.add_argument(
        "--files",
        default=",".join(DEFAULT_RWKU_FILES),
        help="comma list of file names or groups ("
        + "; ".join(f"{name}: {','.join(stems)}" for name, stems in RWKU_FILE_GROUPS.items())
        + "). Default: probes,mia. The 'rule' group comes from --local-dir only",
    )
    muse = commands.add_parser("muse", help=f"MUSE-Books evaluation files from {MUSE_BOOKS_REPO_ID}")
    muse.add_argument("--parts", default=",".join(MUSE_PARTS), help="comma list of knowmem, verbmem, privleak")
    for sub, repo in ((rwku, RWKU_REPO_ID), (muse, MUSE_BOOKS_REPO_ID)):
        sub.add_argument(
            "--cache-dir",
            default=None,
            help="where to write <cache-dir>/rwku or <cache-dir>/muse/books (default: $RULE_CACHE/data or ~/.cache/rule/data)",
        )
        sub.add_argument(
            "--local-dir",
            default=None,
            help="existing folder in the same layout to use first, e.g. ../shared/data/rwku",
        )
        sub.add_argument("--repo-id", default=repo, help=f"Hugging Face dataset id (default {repo})")
    args = parser.parse_args(argv)
    cache_dir = Path(args.cache_dir) if args.cache_dir else _default_cache_dir()
    try:
        if args.benchmark == "rwku":
            result = fetch_rwku(args.targets, cache_dir, args.files, args.local_dir, args.repo_id)
        else:
            result = fetch_muse_books(cache_dir, args.local_dir, args.repo_id, args.parts)
    except (DataNotAvailableError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    print(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
