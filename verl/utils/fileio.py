"""Atomic file writes: readers see the old file or the complete new one, never a partial file.

Everything the project writes for later reading (results, tables, configs, trackers, data files, plots)
goes through :func:`atomic_path`: the content is written to a temporary file in the destination's folder
and moved over the destination with ``os.replace`` (atomic on POSIX within one filesystem); on any error
the temporary file is removed and the old destination is left untouched.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

PathLike = Union[str, Path]


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (parents created); on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json_atomic(
    path: PathLike, obj: Any, indent: int = 1, default: Optional[Callable[[Any], Any]] = None
) -> Path:
    """Write ``obj`` as UTF-8 JSON (non-ASCII kept, NaN/inf as ``null``) to ``path`` atomically.

    An object JSON cannot encode raises ``TypeError`` (unless ``default`` converts it) and leaves ``path`` as it was.
    """
    text = json.dumps(finite_or_none(obj), ensure_ascii=False, indent=indent, default=default)
    return write_text_atomic(path, text)
