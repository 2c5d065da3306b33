"""Atomic writes: complete new content or the old file, never a partial file or a stray temp file."""

import json
import math

import pytest

from verl.utils.fileio import atomic_path, finite_or_none, write_json_atomic, write_text_atomic


def test_json_keeps_non_ascii_and_writes_nan_as_null(tmp_path):
    path = write_json_atomic(tmp_path / "a" / "r.json", {"name": "Beyoncé", "x": math.nan, "y": [1.5, math.inf]})
    assert "Beyoncé" in path.read_text(encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == {"name": "Beyoncé", "x": None, "y": [1.5, None]}
    assert finite_or_none((1.0, -math.inf)) == [1.0, None]


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = write_text_atomic(tmp_path / "f.json", "old")
    with pytest.raises(TypeError):
        write_json_atomic(path, [object()])
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert write_json_atomic(path, [object()], default=str).read_text().startswith("[")


def test_replaced_file_is_world_readable(tmp_path):
    path = write_text_atomic(tmp_path / "t.md", "table")
    assert path.stat().st_mode & 0o044 == 0o044
