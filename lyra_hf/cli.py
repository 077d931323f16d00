"""The command-line wrapper shared by lyra-train, lyra-predict and lyra-scan.

Exit codes: 0 done; 2 a usage error (a bad flag or flag value, reported by argparse before anything runs); 1 bad data,
a bad checkpoint, a busy or full output folder, or a Hub error, reported as one line `lyra-X: error: ...` with the
value at fault. Anything else is a bug in lyra-hf and keeps its traceback.
"""

import argparse
import signal
import sys
import warnings
from collections.abc import Callable

import datasets
import torch
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


def add_cpu_flags(parser: argparse.ArgumentParser) -> None:
    """`--num-processes` and `--threads` (see `lyra_hf.cpu.plan_processes` for the defaults)."""
    group = parser.add_argument_group("CPU use (default: one single-threaded process per CPU this process may use)")
    group.add_argument("--num-processes", type=int, help="processes to share the work; 1 runs it in this process alone")
    group.add_argument("--threads", type=int, help="torch threads per process (default: 1, or OMP_NUM_THREADS when set)")


def check_cpu_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag in ("num_processes", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")


def quiet_library_output() -> None:
    """The command shows its own progress and errors; the libraries' bars (CSV parsing, weight loading) and their
    deprecation notices, addressed to developers of code that calls them, are noise in its output."""
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def is_expected_error(type_name: str) -> bool:
    """Whether an exception type, known by name only (raised in another process), is one of `EXPECTED_ERRORS`."""
    import builtins

    error_type = getattr(builtins, type_name, None)
    if isinstance(error_type, type) and issubclass(error_type, BaseException):
        return issubclass(error_type, EXPECTED_ERRORS)
    return type_name in {error.__name__ for error in EXPECTED_ERRORS}


def exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


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
    # SIGTERM (`kill`, a scheduler's time limit) unwinds like Ctrl-C, so temporary files are removed on the way out.
    previous_handler = signal.signal(signal.SIGTERM, exit_on_sigterm)
    threads = torch.get_num_threads()  # a command sets its own; a caller in the same process gets its own back
    try:
        summary = run(args)
    except EXPECTED_ERRORS as error:
        print(f"{parser.prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        torch.set_num_threads(threads)
    if summary:
        print(summary)
    return 0


__all__ = ["EXPECTED_ERRORS", "ArgumentParser", "add_cpu_flags", "check_cpu_flags", "is_expected_error", "main", "one_line", "quiet_library_output"]
