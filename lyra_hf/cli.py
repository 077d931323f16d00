"""The command-line wrapper shared by lyra-train, lyra-predict and lyra-scan.

Exit codes: 0 done; 2 a usage error (a bad flag or flag value, reported by argparse before anything runs); 1 bad data,
a bad checkpoint, a busy or full output folder, or a Hub error, reported as one line `lyra-X: error: ...` with the
value at fault; 130 after Ctrl-C and 143 after SIGTERM, reported as one line `lyra-X: interrupted; ...` (what was
written is complete, temporary files are removed). Anything else is a bug in lyra-hf and keeps its traceback.
"""

import argparse
import dataclasses
import difflib
import importlib.util
import json
import math
import os
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
import transformers
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError

from .allocator import retain_freed_memory


# The errors that bad input, checkpoints, files and networks raise; OSError covers missing files, full disks and the
# Hub client's HTTP errors.
EXPECTED_ERRORS = (ValueError, OSError, SafetensorError, EntryNotFoundError)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (`kill`, a scheduler's time limit), raised where the process is, so that it unwinds
    like Ctrl-C and every temporary file is removed on the way out; `cli.main` reports it in one line."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def raise_interrupted(signum, frame):
    """The handler of Ctrl-C and SIGTERM. Inside an object's finalizer (`__del__`, e.g. during garbage collection)
    Python would print the exception as "ignored" and drop it, so there the signal is sent again a moment later."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        frame = frame.f_back
    raise Interrupted(signum)


def interrupt_exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report a process a signal ended: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and every flag's default after its help (flags without a default say nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not unset and "%(default)" not in help and action.option_strings:
            help += " (default: %(default)s)"
        return help


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors in the commands' one-line format (exit 2); `--help` still shows the full usage."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def bounded(kind: type, minimum: float | None = None, above: float | None = None, below: float | None = None):
    """An argparse `type` for a finite number of `kind` (int or float) at least `minimum`, strictly above `above` and
    strictly below `below`; anything else (text, NaN, infinity, out of range) is a usage error naming the value."""
    limits = [f"at least {minimum}" if minimum is not None else "", f"above {above}" if above is not None else ""]
    limits.append(f"below {below}" if below is not None else "")
    wanted = (
        f"{'a whole number' if kind is int else 'a finite number'} {' and '.join(limit for limit in limits if limit)}"
    ).strip()

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (minimum is not None and value < minimum)
            or (above is not None and value <= above)
            or (below is not None and value >= below)
        ):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


POSITIVE_INT = bounded(int, minimum=1)


def device(text: str) -> str:
    """An argparse `type` for `--device`: a torch device this machine has (`cpu`, `cuda`, `cuda:1`, `mps`, ...)."""
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if parsed.type == "cpu":
        return text
    backend = getattr(torch, parsed.type, None)
    available = bool(backend and hasattr(backend, "is_available") and backend.is_available())
    count = backend.device_count() if available and hasattr(backend, "device_count") else 1
    if not available or (parsed.index is not None and parsed.index >= count):
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no such {parsed.type} device (use --device cpu)")
    return text


def option(default=None, help: str = "", **flag):
    """A dataclass field that is also a command-line flag: `help` and argparse's `type`, `choices` or `metavar` in
    `flag` travel in the field's metadata (the `run_glue.py` habit), and `add_options` makes the flag. A list default
    is written as its comma-separated text, which the flag's `type` (`comma_separated`) reads back."""
    metadata = {"help": help, **flag}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def comma_separated(text: str) -> list[str]:
    """An argparse `type`: `a, b` -> ["a", "b"] (empty items are kept for the options' own checks)."""
    return [item.strip() for item in text.split(",")]


def add_options(parser: argparse.ArgumentParser, options: type, title: str | None = None) -> None:
    """One flag per field of the dataclass `options` (`--field-name`), in a help group headed `title`: a boolean field
    is a switch; any other takes a value, read by the `type` in its metadata."""
    group = parser.add_argument_group(title) if title else parser
    own = {field.name for field in dataclasses.fields(options)} - {
        field.name
        for base in options.__mro__[1:]
        if dataclasses.is_dataclass(base)
        for field in dataclasses.fields(base)
    }
    for field in dataclasses.fields(options):
        if field.name not in own or "help" not in field.metadata:
            continue
        flag = f"--{field.name.replace('_', '-')}"
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if field.type is bool:
            group.add_argument(flag, action="store_true", default=default, help=field.metadata["help"])
        elif field.type == bool | None:  # unset: a default decides (e.g. the task's); --no-X says no
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=field.metadata["help"]
            )
        else:
            default = ",".join(default) if isinstance(default, list) else default
            group.add_argument(flag, default=default, **field.metadata)


@dataclasses.dataclass
class CpuOptions:
    """How a command shares its work over this machine's CPUs (see `lyra_hf.cpu.plan_processes` for the defaults)."""

    num_processes: int | None = option(
        help="processes to share the work; 1 runs it in this process alone", type=POSITIVE_INT
    )
    threads: int | None = option(
        help="torch threads per process (default: 1, or OMP_NUM_THREADS when set)", type=POSITIVE_INT
    )


CPU_TITLE = "CPU use (default: one single-threaded process per CPU this process may use)"


def figures_wanted(args: argparse.Namespace, command: str) -> bool:
    """Whether a command draws its figures: not with `--no-figures`, and not without matplotlib (the `plot` extra),
    which it says in one line before writing its tables alone."""
    if args.no_figures:
        return False
    if importlib.util.find_spec("matplotlib") is None:
        print(
            f"{command}: matplotlib is not installed, writing the tables only (pip install lyra-hf[plot] for figures).",
            file=sys.stderr,
        )
        return False
    return True


def add_cpu_flags(parser: argparse.ArgumentParser) -> None:
    """`--num-processes` and `--threads`."""
    add_options(parser, CpuOptions, CPU_TITLE)


def flag_values_from_json(parser: argparse.ArgumentParser, path: str) -> dict:
    """The flag values a JSON object of option names holds (an `options.json`), each checked exactly as the flag's
    value would be on the command line: a name no flag has, a value of the wrong kind or out of range is a usage
    error naming the file, the option and the value."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        parser.error(f"options file {path}: cannot be read as JSON ({one_line(error)})")
    if not isinstance(values, dict):
        parser.error(
            f"options file {path} must hold a JSON object of option names and values, got a {type(values).__name__}"
        )
    actions = {action.dest: action for action in parser._actions if action.option_strings and action.dest != "help"}
    checked = {}
    for key, value in values.items():
        if key not in actions:
            hint = difflib.get_close_matches(key, actions, n=1)
            parser.error(
                f"options file {path}: unknown option {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        checked[key] = (
            value if value is None else flag_value(parser, actions[key], value, f"options file {path}: {key}")
        )
    return checked


def flag_value(parser: argparse.ArgumentParser, action: argparse.Action, value, where: str):
    """`value` (from JSON) checked and converted as `action` converts its text on the command line."""
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            parser.error(f"{where} must be true or false, got {json.dumps(value)}")
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = ",".join(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        parser.error(f"{where} must be a string or a number, got {json.dumps(value)}")
    try:
        converted = action.type(str(value)) if action.type else str(value)
    except argparse.ArgumentTypeError as error:
        parser.error(f"{where} {error}")
    if action.choices is not None and converted not in action.choices:
        parser.error(f"{where} must be one of {', '.join(map(str, action.choices))}, got {json.dumps(value)}")
    return converted


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`argv` parsed; when the command takes an options file (a positional `options_file`), its values are the
    defaults that the flags given beside it override."""
    args = parser.parse_args(argv)
    if getattr(args, "options_file", None):
        parser.set_defaults(**flag_values_from_json(parser, args.options_file))
        args = parser.parse_args(argv)
    return args


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


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def rerun_hint(prog: str, argv: list[str], drop: dict[str, bool] | None = None, add: tuple[str, ...] = ()) -> str:
    """The command line `argv` again, shell-quoted, without the flags in `drop` (flag -> whether it takes a value,
    written `--flag value` or `--flag=value`) and with `add` at the end."""
    drop, kept, index = drop or {}, [], 0
    while index < len(argv):
        flag = argv[index]
        name = flag.split("=", 1)[0]
        if name in drop:
            index += 2 if drop[name] and "=" not in flag else 1
            continue
        kept.append(flag)
        index += 1
    return shlex.join([prog, *kept, *add])


def main(
    parser: argparse.ArgumentParser,
    check_args: Callable[[argparse.ArgumentParser, argparse.Namespace], object],
    run: Callable[[object], str | None],
    argv: list[str] | None = None,
    after_interrupt: Callable[[list[str]], str] = lambda argv: "nothing partial was written",
) -> int:
    """Parse `argv` (`parse_command_line`), let `check_args` reject bad flag values through `parser.error` (exit 2)
    and return what `run` takes (the options), then `run` it; its return value, when not None, is printed as the
    command's closing line. After Ctrl-C or SIGTERM the command prints `after_interrupt(argv)` (e.g. how to resume) in
    its one line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_command_line(parser, argv)
    args.command = [parser.prog, *argv]  # what lyra-train records in results.json, to rerun the run
    options = check_args(parser, args)
    quiet_library_output()
    retain_freed_memory()
    previous_handlers = {signum: signal.signal(signum, raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()  # a command sets its own; a caller in the same process gets its own back
    try:
        summary = run(options)
    except EXPECTED_ERRORS as error:
        print(f"{parser.prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        name = signal.Signals(interrupt_exit_code(interrupt) - 128).name
        print(f"{parser.prog}: interrupted ({name}); {after_interrupt(argv)}", file=sys.stderr)
        return interrupt_exit_code(interrupt)
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        torch.set_num_threads(threads)
    if summary:
        print(summary)
    return 0


__all__ = [
    "EXPECTED_ERRORS",
    "POSITIVE_INT",
    "ArgumentParser",
    "CpuOptions",
    "Interrupted",
    "add_cpu_flags",
    "add_options",
    "bounded",
    "comma_separated",
    "device",
    "is_expected_error",
    "main",
    "one_line",
    "option",
    "parse_command_line",
    "quiet_library_output",
    "rerun_hint",
]
