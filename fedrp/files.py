"""Writing a file or folder so that a crash never leaves a torn one where a good one was."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, *, folder: bool = False, mode: int | None = None,
                replace: bool = True) -> Iterator[Path]:
    """A temporary sibling of `path` to write in the block; when the block ends without error it takes
    `path`'s place in one rename, and on any error it is removed and `path` is left as it was.

    folder: the temporary path is a folder (a rename cannot replace a non-empty folder: the caller
    removes an old one first). mode: permissions to give it (mkstemp makes files owner-only).
    replace=False: never overwrite; raises FileExistsError when `path` exists by the block's end
    (another process wrote it first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        elif folder:
            os.rename(tmp, path)  # fails on an existing non-empty folder
        else:
            os.link(tmp, path)  # fails on any existing file, unlike rename
    except OSError as err:
        if not replace and path.exists():
            raise FileExistsError(f"{path} was written by someone else meanwhile") from err
        raise
    finally:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> Path:
    """Write a small text file atomically."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def check_writable_folder(folder: str | os.PathLike, option: str, what: str = "files") -> None:
    """A folder to write into later: it, or else its nearest existing parent, must be a folder this process
    can create files in. Checked before hours of work, and leaves nothing behind."""
    folder = Path(folder)
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option} {folder}: {existing} is a file: expected a folder to write {what} into")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".fedrp-probe.", suffix=".tmp")
    except OSError as err:
        raise ValueError(f"{option} {folder}: cannot create files in {existing} ({err.strerror}): expected a "
                         f"writable folder for {what}") from None
    os.close(fd)
    os.unlink(probe)
