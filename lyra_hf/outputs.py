"""Writing outputs without losing anything: files and folders written atomically, an output folder locked for the
length of a run, and the one rule for what an earlier run left there.

Every file the commands write goes through `atomic_file` or `atomic_directory`: the content is written under a
temporary name in the same folder and renamed into place only once complete, so a killed run or a full disk leaves the
previous file intact and no temporary behind.
"""

import contextlib
import csv
import fcntl
import glob
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from safetensors import SafetensorError


LOCK_FILE = ".lyra-hf.lock"


def with_default_permissions(path) -> None:
    """Give a file made by `tempfile.mkstemp` (owner-only) the permissions a plain `open` would, under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def raise_write_error(error: BaseException, path: Path):
    """Re-raise an error met while writing `path` (its temporary files already removed) as an `OSError` that names
    `path` rather than a temporary file. Serializers report a full disk in their own types (safetensors'
    `SafetensorError`, `torch.save`'s `RuntimeError`): those become an `OSError` too."""
    if isinstance(error, OSError):
        raise OSError(error.errno, f"Could not write {path}: {error.strerror or error}") from error
    if isinstance(error, (SafetensorError, RuntimeError)):
        raise OSError(f"Could not write {path}: {' '.join(str(error).split())}") from error
    raise error


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of `path` that a killed process left behind (their names carry its process id)."""
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temporary.name[len(path.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            temporary.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; once the block ends it becomes `path` (with `overwrite=False` only if no
    file of that name appeared meanwhile). On any failure, a full disk and SIGTERM (see `cli.main`) included, the
    temporary file is removed and `path` is left as it was; one left by a killed process is removed the next time."""
    path = Path(path)
    if Path("/proc/self").exists():
        remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with_default_permissions(temporary)
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if `path` exists: never replaces a file another process wrote
            temporary.unlink()
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        raise_write_error(error, path)


@contextmanager
def atomic_text(path: str | Path, overwrite: bool = True) -> Iterator[TextIO]:
    """`atomic_file` as an open text stream (for output written piece by piece)."""
    with atomic_file(path, overwrite) as temporary:
        with open(temporary, "w", newline="") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())


def write_text(path: str | Path, text: str, overwrite: bool = True) -> None:
    with atomic_text(path, overwrite) as stream:
        stream.write(text)


def strict_json_values(content):
    """`content` with every non-finite float (NaN, infinity) as None: JSON has no NaN, and strict readers (jq,
    JavaScript, json.loads with parse_constant) refuse the bare `NaN` Python would write. The writer says why a value is
    null in a note of its own (see lyra_hf.training.loop.evaluate)."""
    if isinstance(content, float):
        return content if math.isfinite(content) else None
    if isinstance(content, dict):
        return {key: strict_json_values(value) for key, value in content.items()}
    if isinstance(content, (list, tuple)):
        return [strict_json_values(value) for value in content]
    return content


def write_json(path: str | Path, content: dict, overwrite: bool = True) -> None:
    write_text(path, json.dumps(strict_json_values(content), indent=2, allow_nan=False), overwrite)


def write_csv(path: str | Path, columns: dict[str, list], overwrite: bool = True) -> None:
    """A CSV file with a header row of the column names and one row per index of the columns."""
    with atomic_text(path, overwrite) as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values()))


def replace_directory(temporary: Path, final: Path) -> None:
    """Move a completely written directory into place; an old one is removed only after the new one is in place."""
    if final.exists():
        retired = final.with_name(f".{final.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(final, retired)
        os.replace(temporary, final)
        shutil.rmtree(retired)
    else:
        os.replace(temporary, final)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; once the block ends it replaces `path` whole. On any failure
    the temporary folder is removed and `path` is left as it was."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)  # left by a run killed while writing
    temporary.mkdir(parents=True)
    try:
        yield temporary
        replace_directory(temporary, path)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise_write_error(error, path)


def remove_outputs(folder: Path, output_names: Iterable[str]) -> None:
    """Remove the files and folders named `output_names` from `folder` (an earlier run's outputs); nothing else."""
    for name in output_names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


@contextmanager
def replacing_outputs(folder: str | Path, output_names: Iterable[str]) -> Iterator[tuple[Path, list[Path]]]:
    """Yield an empty temporary folder inside `folder` and a list that, once the block ends, holds the final paths.
    Then every file written there moves into `folder`, and what an earlier run left under one of `output_names` and
    this run did not write is removed (no stale files beside new ones); other files in `folder` are kept. On any
    failure the temporary folder is removed and `folder` is left as it was."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / ".outputs.tmp"
    shutil.rmtree(temporary, ignore_errors=True)  # left by a run killed while writing
    temporary.mkdir()
    moved: list[Path] = []
    try:
        yield temporary, moved
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise_write_error(error, folder)
    for source in sorted(temporary.iterdir()):
        os.replace(source, folder / source.name)
        moved.append(folder / source.name)
    remove_outputs(folder, [name for name in output_names if folder / name not in moved])
    temporary.rmdir()


# --- output folders ----------------------------------------------------------------------------------------------


def refuse_earlier_outputs(where: str, found: list[str], what: str | None, remedy: str) -> None:
    """Every command's one rule for what an earlier run left: it is never written over unless the user passes the flag
    that says so (`remedy`), and the refusal comes before any work. `where` is the flag and path, `found` the earlier
    outputs there (refused when any), `what` names them (None: the file `where` names exists)."""
    if found:
        holds = f"already holds {what} ({', '.join(found)})" if what else "exists"
        raise ValueError(f"{where} {holds}; pass {remedy}.")


@contextmanager
def locked_output_dir(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the output folder `path` (created if needed) for the block: a second run into the same
    folder fails at once. The lock is an OS file lock (`flock` on `path/.lyra-hf.lock`): the kernel releases it when
    the process ends, so a run that was killed never blocks the next one. The lock file is removed when the block
    ends, while still held; a process that opened it just before locks a file no longer there, sees that, and locks
    the new one instead."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    while True:
        handle = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise ValueError(
                f"output folder {path} is in use by another run; wait for it to end or choose another folder."
            ) from None
        if is_the_file(handle, path / LOCK_FILE):
            break
        os.close(handle)  # locked the file a finished run had just removed
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path / LOCK_FILE)
        os.close(handle)  # releases the lock


def is_the_file(handle: int, path: Path) -> bool:
    """Whether the open file `handle` is the file at `path` now."""
    try:
        return os.path.samestat(os.fstat(handle), os.stat(path))
    except FileNotFoundError:
        return False


__all__ = [
    "LOCK_FILE",
    "atomic_directory",
    "atomic_file",
    "atomic_text",
    "locked_output_dir",
    "refuse_earlier_outputs",
    "remove_outputs",
    "replace_directory",
    "replacing_outputs",
    "write_csv",
    "write_json",
    "write_text",
]
