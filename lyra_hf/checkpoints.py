"""Checkpoints and output files: loading a saved model or seed ensemble, writing files and folders atomically, and
locking an output folder for the length of a run.

Every file the commands write goes through `atomic_file` or `atomic_directory`: the content is written under a
temporary name in the same folder and renamed into place only once complete, so a killed run or a full disk leaves the
previous file intact and no temporary behind.
"""

import csv
import fcntl
import glob
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import TextIO
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import cached_file
from transformers.utils import logging as transformers_logging

from .tasks import task_of


LOCK_FILE = ".lyra-hf.lock"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# A seed ensemble's folder or Hub repo: `save_pretrained` folders of its members beside this manifest.
ENSEMBLE_FILE = "ensemble.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
# `owner/name` or `name`: anything else (two slashes, a leading dot, a drive or absolute path) is a local path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class RunLayout:
    """The folder of a lyra-train run, the one layout that training, the Hub, loading, prediction and scanning read:

        results.json               the run's results and how it was made
        best/                      the chosen model and tokenizer (`save_pretrained`), or an ensemble's members
        checkpoints/epoch_NNNN/    the last complete epochs (`accelerator.save_state`)
        logs/                      what `--report-to`'s trackers log
        member_<i>/, fold_<k>/     an ensemble's members and a cross-validation's folds, each a run folder
    """

    root: Path
    RESULTS: ClassVar[str] = "results.json"
    BEST: ClassVar[str] = "best"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    LOGS: ClassVar[str] = "logs"
    OUTPUTS: ClassVar[tuple[str, ...]] = (RESULTS, BEST, CHECKPOINTS, LOGS)  # what --overwrite-output-dir replaces

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def results(self) -> Path:
        return self.root / self.RESULTS

    @property
    def best(self) -> Path:
        return self.root / self.BEST

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:04d}"

    def saved_checkpoints(self) -> list[Path]:
        """The checkpoint folders, oldest first (a temporary one being written does not match)."""
        return sorted(self.checkpoints.glob("epoch_[0-9][0-9][0-9][0-9]"))

    @staticmethod
    def member_name(index: int) -> str:
        """The subfolder of an ensemble's member, in the run folder and in its `best/` (a Hub repo's too)."""
        return f"member_{index}"

    def fold(self, fold: str) -> "RunLayout":
        return RunLayout(self.root / f"fold_{fold}")

    def existing_outputs(self) -> list[str]:
        return [name for name in self.OUTPUTS if (self.root / name).exists()]

    def holds_a_model(self) -> bool:
        """Whether `best/` holds a saved model or an ensemble (the folder is a run's, not a checkpoint)."""
        return (self.best / "config.json").is_file() or (self.best / ENSEMBLE_FILE).is_file()


# --- atomic writes -----------------------------------------------------------------------------------------------


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
    null in a note of its own (see lyra_hf.train.evaluate)."""
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


@contextmanager
def locked_output_dir(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the output folder `path` (created if needed) for the block: a second run into the same
    folder fails at once. The lock is an OS file lock (`flock` on `path/.lyra-hf.lock`): the kernel releases it when
    the process ends, so a run that was killed never blocks the next one."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    handle = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise ValueError(f"output folder {path} is in use by another run; wait for it to end or choose another folder.") from None
    try:
        yield path
    finally:
        os.close(handle)  # releases the lock


# --- loading -----------------------------------------------------------------------------------------------------


def resolve_checkpoint(name: str) -> str:
    """A checked local checkpoint folder, or a Hub id to download from. Only a string shaped like a Hub id (`name` or
    `owner/name`) that is not a local path goes to the Hub; anything else must be a local folder holding a saved model
    with safetensors weights."""
    path = Path(name).expanduser()
    if not path.exists():
        if not HUB_ID.match(name):
            raise FileNotFoundError(f"No such directory: {name}")
        return name
    if not path.is_dir():
        raise ValueError(f"{name} is a file; a checkpoint is a folder with config.json and model.safetensors.")
    if not (path / "config.json").is_file():
        if RunLayout(path).holds_a_model():
            raise ValueError(f"{name} is a lyra-train run folder, not a checkpoint; did you mean {RunLayout(path).best}?")
        raise ValueError(f"{name} holds no config.json: not a saved model.")
    if not any((path / weights).is_file() for weights in WEIGHT_FILES):
        if pickled := [weights for weights in PICKLE_FILES if (path / weights).is_file()]:
            raise ValueError(
                f"{name} holds {pickled[0]} and no model.safetensors; lyra-hf loads safetensors weights only (other "
                "formats can run code when loaded). Convert it where you trust its origin."
            )
        raise ValueError(f"{name} holds no model.safetensors.")
    return str(path)


TOKENIZER_FILE = "tokenizer_config.json"


def load_tokenizer(name: str, source: str, options: dict):
    """The tokenizer saved with checkpoint `name` (resolved to `source`); one saved without a tokenizer is refused, not
    given a default one that may not be the alphabet it was trained on."""
    where = {"revision": options.get("revision"), "subfolder": options.get("subfolder", "")}
    if cached_file(source, TOKENIZER_FILE, _raise_exceptions_for_missing_entries=False, **where) is None:
        raise ValueError(
            f"{name} holds no tokenizer ({TOKENIZER_FILE}): save the one the model was trained with beside it "
            "(tokenizer.save_pretrained), as lyra-train does."
        )
    return AutoTokenizer.from_pretrained(source, **options)


def check_model_and_tokenizer(config, tokenizer, where: str) -> None:
    """Refuse a tokenizer that does not fit a model's embedding: another vocabulary size, padding id or alphabet (the
    letters `config.alphabet` records), in one line naming both."""
    differences = []
    if len(tokenizer) != config.vocab_size:
        differences.append(f"the tokenizer has {len(tokenizer)} tokens, the model's embedding {config.vocab_size}")
    if config.pad_token_id is not None and tokenizer.pad_token_id != config.pad_token_id:
        differences.append(f"the tokenizer pads with id {tokenizer.pad_token_id}, the model with {config.pad_token_id}")
    letters, trained_on = getattr(tokenizer, "letters", None), getattr(config, "alphabet", None)
    if trained_on and letters != trained_on:
        differences.append(f"the tokenizer's alphabet is {letters!r}, the model was trained on {trained_on!r}")
    if differences:
        raise ValueError(f"{where}: the model and its tokenizer do not match ({'; '.join(differences)}).")


def load_checkpoint(name: str, revision: str | None = None, trust_remote_code: bool = False, subfolder: str = ""):
    """The tokenizer and the prediction head (in eval mode) a checkpoint was saved with: a local folder or a Hub id,
    or a `subfolder` of either (an ensemble's member)."""
    if subfolder and Path(name).expanduser().exists():
        name, subfolder = str(Path(name, subfolder)), ""
    source = resolve_checkpoint(name)
    options = {"revision": revision, "trust_remote_code": trust_remote_code, "subfolder": subfolder}
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, EntryNotFoundError) as error:
        if Path(source).exists():
            raise
        first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise OSError(f"{name}: no such local directory, and no Hub model could be loaded ({first_line.strip()})") from error
    tokenizer = load_tokenizer(name, source, options)
    check_model_and_tokenizer(config, tokenizer, str(Path(name, subfolder)) if subfolder else name)
    model_class = task_of(config).auto_class
    # transformers logs a multi-line load report for weights that do not fit; the error below names them instead.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(source, config=config, ignore_mismatched_sizes=True, output_loading_info=True, **options)
    except SafetensorError as error:
        raise ValueError(f"{name}: model.safetensors is corrupt or truncated ({error}).") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    if info["mismatched_keys"]:
        mismatched = "; ".join(
            f"{key}: {tuple(saved)} in the weights, {tuple(expected)} from config.json"
            for key, saved, expected in sorted(info["mismatched_keys"])[:3]
        )
        raise ValueError(f"{name}: the weights do not match the checkpoint's config.json ({mismatched}).")
    if info["missing_keys"]:
        # A head or layer left at its random initialization would predict noise.
        missing = ", ".join(sorted(info["missing_keys"])[:3])
        raise ValueError(f"{name}: model.safetensors lacks weights the model needs ({missing}).")
    return tokenizer, model.eval()


def ensemble_members(name: str, revision: str | None = None) -> list[str] | None:
    """The member subfolders a seed ensemble's manifest lists (local folder or Hub repo), or None for a single model."""
    path = Path(name).expanduser()
    if path.exists():
        manifest = path / ENSEMBLE_FILE
        if not manifest.is_file():
            return None
    elif HUB_ID.match(name):
        try:
            manifest = Path(hf_hub_download(name, ENSEMBLE_FILE, revision=revision))
        except (EntryNotFoundError, OSError):
            # A single model's repo, or none reachable: `load_checkpoint` loads it or reports why in its own words.
            return None
    else:
        return None
    try:
        members = json.loads(manifest.read_text())["members"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{name}: {ENSEMBLE_FILE} is not a lyra-hf ensemble manifest ({error}).") from None
    if not members or not all(isinstance(member, str) and HUB_ID.match(member) and "/" not in member for member in members):
        raise ValueError(f"{name}: {ENSEMBLE_FILE} must list the members' subfolder names, got {members!r}.")
    return members


def load_models(name: str, revision: str | None = None, trust_remote_code: bool = False):
    """The tokenizer and the models of a checkpoint: one model, or every member of a seed ensemble (a folder or Hub
    repo with `ensemble.json`; each member loads alone with `from_pretrained(name, subfolder=member)`). Members must
    agree on the alphabet and the targets, or their mean would mix different quantities."""
    members = ensemble_members(name, revision)
    if members is None:
        tokenizer, model = load_checkpoint(name, revision, trust_remote_code)
        return tokenizer, [model]
    loaded = [load_checkpoint(name, revision, trust_remote_code, subfolder=member) for member in members]
    tokenizer, first = loaded[0]
    for member, (member_tokenizer, model) in zip(members[1:], loaded[1:]):
        if member_tokenizer.get_vocab() != tokenizer.get_vocab() or model.config.id2label != first.config.id2label:
            raise ValueError(f"{name}: ensemble member {member} has another alphabet or other targets than {members[0]}.")
        if task_of(model.config) != task_of(first.config):
            raise ValueError(f"{name}: ensemble member {member} is a {task_of(model.config).name} model, {members[0]} a {task_of(first.config).name} one.")
    return tokenizer, [model for _, model in loaded]


__all__ = [
    "RunLayout",
    "atomic_file",
    "atomic_text",
    "atomic_directory",
    "write_text",
    "write_json",
    "write_csv",
    "replace_directory",
    "remove_outputs",
    "replacing_outputs",
    "locked_output_dir",
    "resolve_checkpoint",
    "load_checkpoint",
    "load_tokenizer",
    "check_model_and_tokenizer",
    "ensemble_members",
    "load_models",
]
