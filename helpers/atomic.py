"""Files and folders written all at once: built under a temporary name beside their destination, then renamed.

A crash, an interrupt or a full disk leaves the previous file or folder (or none) in place, never a
half-written one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged_folder(destination: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; when the block succeeds it becomes `destination`.

    With `replace=False` an existing destination wins (another process built the same thing first) and the
    staging folder is dropped; with `replace=True` it is swapped out for the new one.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-building-", dir=destination.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; what is built here is for everyone to read
    try:
        yield staging
        if not destination.exists():
            staging.rename(destination)
        elif replace:
            backup = destination.with_name(f".{destination.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            destination.rename(backup)
            staging.rename(destination)
            shutil.rmtree(backup)
        else:
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(destination: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; when the block succeeds the file written there becomes
    `destination`, readable by all as a plain write makes it (mkstemp's files are private to their owner). On
    failure it is removed. The temporary name ends in `suffix` (default: the destination's), for writers that
    choose their format by it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{destination.stem}-",
        suffix=destination.suffix if suffix is None else suffix,
        dir=destination.parent,
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o644)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
