"""Reading benchmark files with clear errors: RWKU per-target probe files and MUSE-Books files.

Every loader names the file on a missing path (``FileNotFoundError``) and the file, row index and key on a
malformed record (``ValueError``). Some copies of RWKU store nested fields as Python-literal strings
(``"choices": "['True, True', ...]"``, ``"answer": "2"``); :func:`literal_field` decodes those, so both the
hub's JSON and such copies load the same way.

Layouts:
    RWKU  ``<data_dir>/Target/<n>_<Name>/<file>.json``  (``data_dir`` holds ``Target/``)
    MUSE  ``<data_dir>/{knowmem,verbmem,privleak}/<split>.json``  (``data_dir`` is the corpus folder,
          e.g. ``.../muse/books``; a folder holding ``books/`` is accepted too)
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, Path]

RWKU_FILES = {
    "forget_fb": "forget_level1.json",
    "forget_qa": "forget_level2.json",
    "forget_aa": "forget_level3.json",
    "neighbor_fb": "neighbor_level1.json",
    "neighbor_qa": "neighbor_level2.json",
    "forget_mia": "forget_mia.json",
    "retain_mia": "retain_mia.json",
    "mmlu": "retain_mmlu.json",
    "bbh": "retain_bbh.json",
    "truthfulqa": "truthful.json",
    "triviaqa": "triviaqa.json",
    "fluency": "fluency.json",
    "boundary": "reject_with_fb_neighbor_target.json",
}
PROBE_KEYS = ("query", "answer")


def read_json_list(path: PathLike) -> list:
    """A JSON file that must hold a list; ``FileNotFoundError`` / ``ValueError`` name the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(content, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(content).__name__}")
    return content


def read_records(path: PathLike, required: Sequence[str], limit: int | None = None) -> list[dict]:
    """The first ``limit`` (all when None) records of a JSON list, each a dict holding every ``required`` key."""
    records = read_json_list(path)
    if limit is not None:
        records = records[:limit]
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: row {row} is a {type(record).__name__}, expected an object")
        for key in required:
            if key not in record:
                raise ValueError(f"{path}: row {row} is missing key {key!r}")
    return records


def read_strings(path: PathLike, limit: int | None = None) -> list[str]:
    """A JSON list of strings (MUSE privleak / raw files)."""
    items = read_json_list(path)
    if limit is not None:
        items = items[:limit]
    for row, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"{path}: row {row} is a {type(item).__name__}, expected a string")
    return items


def literal_field(record: dict, key: str, expected: type, path: PathLike, row: int) -> Any:
    """``record[key]`` decoded from a Python-literal string when needed, checked to be of type ``expected``."""
    value = record[key]
    if isinstance(value, str) and expected is not str:
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"{path}: row {row} key {key!r} is not a valid {expected.__name__}: {error}") from error
    if expected is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, expected) or isinstance(value, bool) and expected is int:
        raise ValueError(f"{path}: row {row} key {key!r} should be a {expected.__name__}, got {value!r:.80}")
    return value


# ----------------------------------------------------------------------------- RWKU
def rwku_target_dir(data_dir: PathLike, dirname: str) -> Path:
    folder = Path(data_dir) / "Target" / dirname
    if not folder.is_dir():
        raise FileNotFoundError(f"RWKU target folder not found: {folder}")
    return folder


def rwku_file(target_dir: Path, kind: str) -> Path:
    return target_dir / RWKU_FILES[kind]


def load_probes(target_dir: Path, kind: str, limit: int | None = None) -> list[dict]:
    """Forget/neighbor probes: dicts with string ``query`` and ``answer`` (``level``, ``type``, ``subject`` optional)."""
    path = rwku_file(target_dir, kind)
    records = read_records(path, PROBE_KEYS, limit)
    for row, record in enumerate(records):
        for key in PROBE_KEYS:
            if not isinstance(record[key], str):
                raise ValueError(f"{path}: row {row} key {key!r} should be a string, got {record[key]!r:.80}")
    return records


def load_mia_texts(target_dir: Path, kind: str, limit: int | None = None) -> list[dict]:
    path = rwku_file(target_dir, kind)
    records = read_records(path, ("text",), limit)
    for row, record in enumerate(records):
        if not isinstance(record["text"], str) or not record["text"]:
            raise ValueError(f"{path}: row {row} key 'text' should be a non-empty string")
    return records


def load_mmlu(target_dir: Path, limit: int | None = None) -> list[dict]:
    """MMLU items with ``choices`` (list[str]), ``answer`` (int) and ``examples`` (list of shots) decoded."""
    path = rwku_file(target_dir, "mmlu")
    items = []
    for row, record in enumerate(read_records(path, ("task", "question", "choices", "answer", "examples"), limit)):
        item = dict(record)
        item["choices"] = literal_field(record, "choices", list, path, row)
        item["answer"] = literal_field(record, "answer", int, path, row)
        item["examples"] = literal_field(record, "examples", list, path, row)
        for shot_index, shot in enumerate(item["examples"]):
            if not isinstance(shot, dict) or any(k not in shot for k in ("question", "choices", "answer")):
                raise ValueError(f"{path}: row {row} examples[{shot_index}] needs question, choices and answer")
        items.append(item)
    return items


def load_bbh(target_dir: Path, limit: int | None = None) -> list[dict]:
    return read_records(rwku_file(target_dir, "bbh"), ("task", "question", "answer", "cot"), limit)


def load_truthfulqa(target_dir: Path, limit: int | None = None) -> list[dict]:
    path = rwku_file(target_dir, "truthfulqa")
    items = []
    for row, record in enumerate(read_records(path, ("question", "mc1_targets", "mc2_targets"), limit)):
        item = dict(record)
        for key in ("mc1_targets", "mc2_targets"):
            targets = literal_field(record, key, dict, path, row)
            if set(targets) < {"choices", "labels"} or len(targets["choices"]) != len(targets["labels"]):
                raise ValueError(f"{path}: row {row} key {key!r} needs equally long 'choices' and 'labels'")
            item[key] = targets
        items.append(item)
    return items


def load_triviaqa(target_dir: Path, limit: int | None = None) -> list[dict]:
    path = rwku_file(target_dir, "triviaqa")
    items = []
    for row, record in enumerate(read_records(path, ("question", "answers"), limit)):
        items.append(dict(record, answers=literal_field(record, "answers", list, path, row)))
    return items


def load_fluency(target_dir: Path, limit: int | None = None) -> list[dict]:
    return read_records(rwku_file(target_dir, "fluency"), ("instruction",), limit)


def load_boundary_probes(target_dir: Path, limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """RULE's synthetic boundary questions: (FB probes from ``FB_neighbor_question``, QA probes from
    ``neighbor_question``), as ``{query, answer}`` records; ``limit`` applies to source rows."""
    path = rwku_file(target_dir, "boundary")
    fb, qa = [], []
    for row, record in enumerate(read_records(path, ("neighbor_question", "FB_neighbor_question"), limit)):
        for key, bucket, level in (("FB_neighbor_question", fb, "1"), ("neighbor_question", qa, "2")):
            pair = literal_field(record, key, dict, path, row)
            if not isinstance(pair.get("question"), str) or not isinstance(pair.get("answer"), str):
                raise ValueError(f"{path}: row {row} key {key!r} needs string 'question' and 'answer'")
            bucket.append({"query": pair["question"], "answer": pair["answer"], "level": level, "type": key})
    return fb, qa


# ----------------------------------------------------------------------------- MUSE
def muse_root(data_dir: PathLike, corpus: str = "books") -> Path:
    """The corpus folder: ``data_dir`` itself, or ``data_dir/<corpus>`` when that exists."""
    data_dir = Path(data_dir)
    return data_dir / corpus if (data_dir / corpus).is_dir() else data_dir


def load_qa(path: Path, limit: int | None = None) -> list[dict]:
    records = read_records(path, ("question", "answer"), limit)
    for row, record in enumerate(records):
        if not isinstance(record["question"], str) or not isinstance(record["answer"], str):
            raise ValueError(f"{path}: row {row} 'question' and 'answer' should be strings")
    return records


def load_verbmem(path: Path, limit: int | None = None) -> list[dict]:
    records = read_records(path, ("prompt", "gt"), limit)
    for row, record in enumerate(records):
        if not isinstance(record["prompt"], str) or not isinstance(record["gt"], str):
            raise ValueError(f"{path}: row {row} 'prompt' and 'gt' should be strings")
    return records
