"""Secrets the service makes for itself when none is configured (the e-ticket link secret, the
development wallet keys), kept in the data folder so every run and every process sharing the
folder uses the same ones."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def kept(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content, made once by `make` when it is missing. The file is written whole
    under another name (readable by its owner only) and linked into place, so processes
    starting at once agree: the first link wins and the others read what it wrote."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(make())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        os.unlink(draft)
    return path.read_bytes()
