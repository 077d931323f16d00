"""Output files of the commands, written atomically (a temporary file in the same directory, then a rename), and
the libraries' progress bars turned off in the commands' own output."""

import csv
import json
import os
import tempfile
from pathlib import Path

import datasets
import transformers


def with_default_permissions(path) -> None:
    """Give a file made by `tempfile.mkstemp` (owner-only) the permissions a plain `open` would, under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_csv_atomically(path: Path, columns: dict[str, list]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(columns)
            writer.writerows(zip(*columns.values()))
        with_default_permissions(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, content: dict) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(content, stream, indent=2)
    with_default_permissions(temporary)
    os.replace(temporary, path)


def quiet_library_progress_bars() -> None:
    """The command shows its own progress; the libraries' bars (CSV parsing, weight loading) are noise in its output."""
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
