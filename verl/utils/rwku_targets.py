"""RWKU unlearning targets: folder names, listing what is on disk, and parsing a target selection.

RWKU stores one folder per target: ``<data_dir>/Target/<n>_<Name>/<file>.json`` where ``n`` is the
1-based position in the benchmark's target order and ``Name`` is the person's name with spaces
replaced by underscores (``1_Stephen_King``, ``10_Prince_Harry,_Duke_of_Sussex``, ``24_Beyoncé``).
``<data_dir>/all_intro.json`` (optional) maps all 200 target names, in that order, to their intros.

A selection ``spec`` is any of
    ``"all"``                     every target on disk
    ``"3"``, ``"1-10"``, ``"1,3,5-7"``  indices and inclusive ranges
    ``"Stephen King"``            a name (case-, accent- and ``_``/space-insensitive)
    ``"1_Stephen_King"``          a folder name
or a list mixing those (and plain ints). Names may contain commas, e.g.
``"Prince Harry, Duke of Sussex"``: the longest comma-joined piece that names a target wins.

Ground layer: standard library only.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

TargetSpec = Union[str, int, Sequence[Union[str, int]]]

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
_DIRNAME = re.compile(r"^(\d+)_(.+)$")

DOWNLOAD_HINT = "python -m data.download rwku --targets {spec} --cache-dir DIR"


def target_dir_name(index: int, name: str) -> str:
    """RWKU's folder name for target ``index`` (1-based): ``f"{index}_{name.replace(' ', '_')}"``."""
    return f"{index}_{name.replace(' ', '_')}"


@dataclass(frozen=True)
class Target:
    """One RWKU target: ``index`` (1-based), ``name`` ("Stephen King") and ``dirname`` ("1_Stephen_King")."""

    index: int
    name: str
    dirname: str

    @classmethod
    def make(cls, index: int, name: str) -> Target:
        return cls(index=index, name=name, dirname=target_dir_name(index, name))

    def __str__(self) -> str:
        return f"{self.index} {self.name}"


def list_targets(data_dir: Union[str, Path]) -> list[Target]:
    """Targets present on disk under ``<data_dir>/Target/<n>_<Name>/``, sorted by index.

    The name comes from the folder's ``intro.json`` ``"target"`` field when present, else from the folder
    name with ``_`` turned back into spaces. Folders whose name does not start with ``<n>_`` are ignored.
    A missing ``Target`` folder gives an empty list.
    """
    target_root = Path(data_dir) / "Target"
    if not target_root.is_dir():
        return []
    found: dict[int, Target] = {}
    for folder in target_root.iterdir():
        match = _DIRNAME.match(folder.name)
        if not folder.is_dir() or match is None:
            continue
        index = int(match.group(1))
        name = _name_from_intro(folder / "intro.json") or match.group(2).replace("_", " ")
        if index in found:
            raise ValueError(f"two RWKU folders share index {index}: {found[index].dirname!r} and {folder.name!r}")
        found[index] = Target(index=index, name=name, dirname=folder.name)
    return [found[i] for i in sorted(found)]


def read_all_intro(data_dir: Union[str, Path]) -> list[Target]:
    """The targets listed in ``<data_dir>/all_intro.json`` (empty when the file is absent), in file order.

    Accepted formats: RWKU's ``{"Stephen King": [intro, ...], ...}`` (index = position + 1), or a list of
    ``{"target": name, ...}`` records like the hub's ``All/intro.json``.
    """
    path = Path(data_dir) / "all_intro.json"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    if isinstance(content, dict):
        names = list(content)
    elif isinstance(content, list):
        names = []
        for row, record in enumerate(content):
            if not isinstance(record, dict) or "target" not in record:
                raise ValueError(f"{path}: row {row} has no 'target' field")
            names.append(record["target"])
    else:
        raise ValueError(f"{path}: expected a JSON object or list, got {type(content).__name__}")
    return [Target.make(i + 1, name) for i, name in enumerate(names)]


def known_targets(data_dir: Union[str, Path]) -> list[Target]:
    """Every target this folder knows of: the ones on disk plus those named in ``all_intro.json``."""
    merged = {t.index: t for t in read_all_intro(data_dir)}
    merged.update({t.index: t for t in list_targets(data_dir)})
    return [merged[i] for i in sorted(merged)]


def match_targets(spec: TargetSpec, candidates: Sequence[Target], *, where: str = "") -> list[Target]:
    """Resolve ``spec`` (see the module docstring) against ``candidates``; raises ``ValueError`` when unknown.

    Order follows the spec, duplicates removed. ``where`` only decorates error messages.
    """
    by_index = {t.index: t for t in candidates}
    selected: list[Target] = []
    for item in _spec_items(spec):
        for target in _match_item(item, candidates, by_index, where):
            if target not in selected:
                selected.append(target)
    if not selected:
        raise ValueError(f"empty RWKU target selection {spec!r}{_where(where)}")
    return selected


def select_targets(spec: TargetSpec, data_dir: Union[str, Path]) -> list[Target]:
    """The downloaded targets under ``data_dir`` that ``spec`` names.

    A target listed in ``all_intro.json`` but not on disk raises ``ValueError`` saying so and how to download it.
    """
    available = list_targets(data_dir)
    try:
        return match_targets(spec, available, where=str(Path(data_dir) / "Target"))
    except ValueError as error:
        known = known_targets(data_dir)
        try:
            wanted = match_targets(spec, known)
        except ValueError:
            raise error from None
        absent = [t for t in wanted if t not in available]
        if not absent:
            raise
        listed = ", ".join(str(t) for t in absent[:10]) + (" ..." if len(absent) > 10 else "")
        raise ValueError(
            f"RWKU target(s) {listed} exist in {Path(data_dir) / 'all_intro.json'} but are not downloaded "
            f"under {Path(data_dir) / 'Target'}; get them with `{DOWNLOAD_HINT.format(spec=_spec_text(spec))}`. "
            f"Available: {_describe(available)}"
        ) from None


def _spec_items(spec: TargetSpec) -> Iterable[Union[str, int]]:
    if isinstance(spec, (str, int)):
        return [spec]
    if isinstance(spec, Sequence):
        return list(spec)
    raise ValueError(f"RWKU target spec must be a string, an int or a list of those, got {type(spec).__name__}")


def _match_item(
    item: Union[str, int], candidates: Sequence[Target], by_index: dict[int, Target], where: str
) -> list[Target]:
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise ValueError(f"RWKU target spec item {item!r} is neither a string nor an int")
    if isinstance(item, int):
        return [_by_index(item, by_index, candidates, where)]
    text = item.strip()
    if text.lower() == "all":
        return list(candidates)
    # Split on commas, but let a longer comma-joined piece win so "Prince Harry, Duke of Sussex" stays whole.
    pieces = text.split(",")
    result: list[Target] = []
    start = 0
    while start < len(pieces):
        for stop in range(len(pieces), start, -1):
            matched = _match_piece(",".join(pieces[start:stop]).strip(), candidates, by_index, where)
            if matched is not None:
                result.extend(matched)
                start = stop
                break
        else:
            piece = pieces[start].strip()
            raise ValueError(
                f"unknown RWKU target {piece!r} in spec {item!r}{_where(where)}{_suggest(piece, candidates)}; "
                f"available: {_describe(candidates)}"
            )
    return result


def _match_piece(
    piece: str, candidates: Sequence[Target], by_index: dict[int, Target], where: str
) -> list[Target] | None:
    """Targets named by one comma-free piece (or a comma-containing name); None when it names nothing."""
    if not piece:
        return None
    numbers = _RANGE.match(piece)
    if numbers:
        first = int(numbers.group(1))
        last = int(numbers.group(2) or first)
        if last < first:
            raise ValueError(f"RWKU target range {piece!r} runs backwards{_where(where)}")
        return [_by_index(i, by_index, candidates, where) for i in range(first, last + 1)]
    key = _fold(piece)
    for target in candidates:
        if piece == target.dirname or key == _fold(target.name) or key == _fold(target.dirname):
            return [target]
    return None


def _by_index(index: int, by_index: dict[int, Target], candidates: Sequence[Target], where: str) -> Target:
    if index not in by_index:
        raise ValueError(f"no RWKU target with index {index}{_where(where)}; available: {_describe(candidates)}")
    return by_index[index]


def _fold(text: str) -> str:
    """Case-, accent-, underscore- and whitespace-insensitive key ("Beyoncé" == "beyonce")."""
    decomposed = unicodedata.normalize("NFKD", text.replace("_", " "))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def _name_from_intro(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read RWKU intro file {path}: {error}") from error
    if isinstance(records, list) and records and isinstance(records[0], dict):
        name = records[0].get("target")
        return name if isinstance(name, str) and name else None
    return None


def _describe(targets: Sequence[Target], limit: int = 100) -> str:
    if not targets:
        return "none (no Target/<n>_<Name>/ folders found)"
    shown = ", ".join(str(t) for t in targets[:limit])
    return shown + (f" ... and {len(targets) - limit} more" if len(targets) > limit else "")


def _suggest(piece: str, candidates: Sequence[Target]) -> str:
    by_key = {_fold(t.name): t for t in candidates}
    close = difflib.get_close_matches(_fold(piece), list(by_key), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(str(by_key[k])) for k in close)}?)" if close else ""


def _where(where: str) -> str:
    return f" in {where}" if where else ""


def _spec_text(spec: TargetSpec) -> str:
    text = spec if isinstance(spec, str) else ",".join(str(s) for s in _spec_items(spec))
    return shlex.quote(str(text))
