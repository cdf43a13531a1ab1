"""Writing files and folders so that a reader never sees them half written, and refusing outputs that would destroy
something."""

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from litgpt_inheritune.errors import fail


def write_text_atomic(path: Path, text: str) -> None:
    """Writes a file through a temporary sibling, so a reader never sees it half written."""
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    temporary.replace(path)


def check_out_dir(out_dir: Path, overwrite: bool, protected: tuple[Path, ...] = ()) -> None:
    """Refuses an out_dir that would destroy something: a file, a non-empty folder without overwrite, an input."""
    resolved = out_dir.resolve()
    for path in protected:
        path = path.resolve()
        if resolved == path or resolved in path.parents:
            fail(f"--out_dir {out_dir} would replace the input {path}; choose another directory")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out_dir {out_dir} is a file; give a directory path")
    if out_dir.is_symlink() and not out_dir.exists():
        fail(f"--out_dir {out_dir} is a broken link; give a directory path")
    if any(parent.exists() and not parent.is_dir() for parent in out_dir.parents):
        fail(f"--out_dir {out_dir} lies inside a file; give a directory path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        fail(f"--out_dir {out_dir} exists and is not empty; pass --overwrite true to replace it or choose another")


@contextmanager
def staged_dir(out_dir: Path, staging: Optional[Path] = None):
    """Yields a temporary directory next to ``out_dir`` that replaces it only when the block succeeds.

    A failure or interruption leaves ``out_dir`` exactly as it was. ``staging`` gives the directory a fixed name
    (cleared first) instead of a fresh one, e.g. ``partial_dir(out_dir)``: what a killed process left there is then
    cleared by the next run rather than left behind.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if staging is None:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
    else:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, out_dir)


def partial_dir(directory: Path) -> Path:
    """The hidden folder a checkpoint is written into before it is renamed to ``directory``."""
    return directory.with_name(f".{directory.name}.partial")


def replace_dir(staging: Path, out_dir: Path) -> None:
    """Puts the finished folder ``staging`` in place of ``out_dir`` (if any): at every moment one complete version
    exists under ``out_dir``'s name or beside it."""
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(out_dir, retired)
        os.rename(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, out_dir)
