"""Writes that never destroy: a folder is replaced only when asked, atomically, and keeps what it does not write.

``atomic_folder(target)`` refuses a ``target`` that already holds something unless ``overwrite`` is set. Even then
the new content goes into a temporary sibling first; files of the old folder that the new content does not
replace (a model folder's ``tokenizer.json``, ``vqgan.*``, ``patch_alphabet.json``, a user's notes) are carried
into it as hard links (copies across file systems), and only then do two renames swap the folders. Readers see
the old folder or the complete new one, never a half-written one, and nothing the writer did not produce is lost.

``atomic_file(path)`` does the same for one file: the caller writes a temporary sibling, which replaces ``path``
only when the block ends normally.

``claim_new_folder(parent, name)`` is for run folders: it creates ``name``, or ``name-2``, ``name-3``... when
that is taken, so a run never writes into another run's folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

OVERWRITE_HINT = ("choose another name, or ask to overwrite (the 'overwrite' switch on the node, --overwrite on "
                  "the command line); overwriting replaces only the files it writes and keeps the others")


def holds_something(target: str | Path) -> bool:
    """True when ``target`` exists and is not an empty folder (an empty folder has nothing to lose)."""
    path = Path(target)
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(path.iterdir())


def check_writable(target: str | Path, overwrite: bool, what: str = "folder") -> None:
    """``ValueError`` when writing ``target`` would replace existing content the caller did not ask to replace,
    or when ``target`` cannot be swapped safely (a file or a symbolic link)."""
    path = Path(target)
    if not holds_something(path):
        return
    if not overwrite:
        raise ValueError(f"{what} {path} already exists; {OVERWRITE_HINT}")
    if path.is_symlink():
        raise ValueError(f"{what} {path} is a symbolic link (to {os.readlink(path)}); overwrite its real folder "
                         "by that path, or choose another name")
    if not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder; move it away or choose another name")


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a real copy
        shutil.copy2(src, dst)
    return dst


def _carry_over(old: Path, new: Path, replaces: Callable[[str], bool]) -> None:
    """Put every top-level entry of ``old`` that ``new`` lacks and ``replaces`` does not claim into ``new``."""
    for entry in old.iterdir():
        dst = new / entry.name
        if dst.exists() or dst.is_symlink() or replaces(entry.name):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dst)
        elif entry.is_dir():
            shutil.copytree(entry, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(dst))


def _replaces_nothing(name: str) -> bool:
    return False


@contextmanager
def atomic_folder(target: str | Path, *, overwrite: bool = False, replaces: Callable[[str], bool] | None = None,
                  what: str = "folder") -> Iterator[Path]:
    """Yield an empty temporary sibling ``.NAME.tmp-*`` of ``target`` to fill; when the block ends normally it
    becomes ``target``, and on any exception it is removed and ``target`` stays as it was.

    Args:
        target: the folder to create or replace.
        overwrite: allow replacing a ``target`` that holds something (else ``ValueError`` before the block runs).
        replaces: says which top-level names of the old folder belong to the layout being written even when the
            new content does not repeat them (e.g. the shards of an earlier sharded save next to a new single
            file), so they are not carried over. Everything else the new content lacks is carried over.
        what: how the error messages call the folder ("model folder", "LoRA folder").
    """
    target = Path(target)
    check_writable(target, overwrite, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)  # noqa: S103  mkdtemp makes it owner-only; model folders are meant to be shared
    try:
        yield tmp
        if target.exists():
            check_writable(target, overwrite, what)  # something may have appeared while the block ran
            _carry_over(target, tmp, replaces or _replaces_nothing)
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            # what is left in ``old`` is either carried over (another link to the same data) or replaced
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path of ``target`` to write; when the block ends normally it replaces ``target``
    in one rename, and on any exception it is deleted and ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; model files are meant to be shared
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def claim_new_folder(parent: str | Path, name: str) -> Path:
    """Create and return ``parent/name``, or ``parent/name-2``, ``name-3``... if taken (never an existing one)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100_000):
        candidate = parent / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RuntimeError(f"{parent} holds 100000 runs named {name!r}; choose another name")
