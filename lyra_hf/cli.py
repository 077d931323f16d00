"""The command-line wrapper shared by lyra-train, lyra-predict and lyra-scan.

Exit codes: 0 done; 2 a usage error (a bad flag or flag value, reported by argparse before anything runs); 1 bad data,
a bad checkpoint, a busy or full output folder, or a Hub error, reported as one line `lyra-X: error: ...` with the
value at fault. Anything else is a bug in lyra-hf and keeps its traceback.
"""

import argparse
import sys
import warnings
from collections.abc import Callable

import datasets
import transformers
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError

from .allocator import retain_freed_memory


# The errors that bad input, checkpoints, files and networks raise; OSError covers missing files, full disks and the
# Hub client's HTTP errors.
EXPECTED_ERRORS = (ValueError, OSError, SafetensorError, EntryNotFoundError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors in the commands' one-line format (exit 2); `--help` still shows the full usage."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def quiet_library_output() -> None:
    """The command shows its own progress and errors; the libraries' bars (CSV parsing, weight loading) and their
    deprecation notices, addressed to developers of code that calls them, are noise in its output."""
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(
    parser: argparse.ArgumentParser,
    check_args: Callable[[argparse.ArgumentParser, argparse.Namespace], None],
    run: Callable[[argparse.Namespace], str | None],
    argv: list[str] | None = None,
) -> int:
    """Parse `argv`, let `check_args` reject bad flag values through `parser.error` (exit 2), then `run`; its return
    value, when not None, is printed as the command's closing line."""
    args = parser.parse_args(argv)
    check_args(parser, args)
    quiet_library_output()
    retain_freed_memory()
    try:
        summary = run(args)
    except EXPECTED_ERRORS as error:
        print(f"{parser.prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    if summary:
        print(summary)
    return 0


__all__ = ["EXPECTED_ERRORS", "ArgumentParser", "main", "one_line", "quiet_library_output"]
