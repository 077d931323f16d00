"""Checkpoints: the folder layout of a lyra-train run (`RunLayout`), and loading a saved model or seed ensemble from a
folder or the Hub (safetensors weights only; pickled weights are refused, never loaded)."""

import json
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import cached_file
from transformers.utils import logging as transformers_logging

from .tasks import task_of


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# A seed ensemble's folder or Hub repo: `save_pretrained` folders of its members beside this manifest.
ENSEMBLE_FILE = "ensemble.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
# How long one attempt to reach the Hub may take before a name that is not a local folder is refused.
HUB_CONNECT_SECONDS = 5.0
# `owner/name` or `name`: anything else (two slashes, a leading dot, a drive or absolute path) is a local path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class RunLayout:
    """The folder of a lyra-train run, the one layout that training, the Hub, loading, prediction and scanning read:

    results.json               the run's results and how it was made
    test_predictions.csv       the best model's prediction of each test row (regression)
    oof_predictions.csv        cross-validation: every fold's test predictions, pooled (per scheme)
    options.json               the run's options, which `lyra-train OUTPUT_DIR/options.json` runs again
    best/                      the chosen model and tokenizer (`save_pretrained`), or an ensemble's members
    checkpoints/epoch_NNNN/    the last complete epochs (`accelerator.save_state`)
    logs/                      what `--report-to`'s trackers log
    member_<i>/, fold_<k>/     an ensemble's members and a cross-validation's folds, each a run folder
    candidates/<name>/         the plain and full candidates lyra-train chose between, each a run folder
    trials/trial_<n>/          a --tune search's trials, each a run folder without test scores
    trials.csv, tuning.png     the search's trials and its figure
    tuning.journal             the search's Optuna study (unless --tune-storage names a database)
    ensemble/                  with --tune N --ensemble K, the chosen configuration's ensemble
    """

    root: Path
    RESULTS: ClassVar[str] = "results.json"
    TEST_PREDICTIONS: ClassVar[str] = "test_predictions.csv"
    OUT_OF_FOLD: ClassVar[str] = "oof_predictions.csv"
    OPTIONS: ClassVar[str] = "options.json"
    BEST: ClassVar[str] = "best"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    LOGS: ClassVar[str] = "logs"
    TRIALS: ClassVar[str] = "trials"
    TRIALS_TABLE: ClassVar[str] = "trials.csv"
    TUNING_FIGURE: ClassVar[str] = "tuning.png"
    TUNING_JOURNAL: ClassVar[str] = "tuning.journal"
    ENSEMBLE: ClassVar[str] = "ensemble"
    CANDIDATES: ClassVar[str] = "candidates"
    # What --overwrite-output-dir replaces.
    OUTPUTS: ClassVar[tuple[str, ...]] = (
        RESULTS,
        OPTIONS,
        BEST,
        CHECKPOINTS,
        LOGS,
        TRIALS,
        TRIALS_TABLE,
        TUNING_FIGURE,
        TUNING_JOURNAL,
        ENSEMBLE,
        CANDIDATES,
        TEST_PREDICTIONS,
        OUT_OF_FOLD,
    )

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def results(self) -> Path:
        return self.root / self.RESULTS

    @property
    def test_predictions(self) -> Path:
        return self.root / self.TEST_PREDICTIONS

    @property
    def options(self) -> Path:
        return self.root / self.OPTIONS

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

    def candidate(self, name: str) -> "RunLayout":
        return RunLayout(self.root / self.CANDIDATES / name)

    def existing_outputs(self) -> list[str]:
        return [name for name in self.OUTPUTS if (self.root / name).exists()]

    def holds_a_model(self) -> bool:
        """Whether `best/` holds a saved model or an ensemble (the folder is a run's, not a checkpoint)."""
        return (self.best / "config.json").is_file() or (self.best / ENSEMBLE_FILE).is_file()


def resolve_checkpoint(name: str) -> str:
    """A checked local checkpoint folder, or a Hub id to download from. Only a string shaped like a Hub id (`name` or
    `owner/name`) that is not a local path goes to the Hub; anything else must be a local folder holding a saved model
    with safetensors weights."""
    path = Path(name).expanduser()
    if not path.exists():
        if not HUB_ID.match(name):
            raise FileNotFoundError(f"No such directory: {name}")
        if (unreachable := hub_out_of_reach()) and try_to_load_from_cache(name, "config.json") is None:
            raise FileNotFoundError(
                f"{name}: no such local directory, and the Hub is out of reach ({unreachable}); give a local folder, "
                "or connect."
            )
        return name
    if not path.is_dir():
        raise ValueError(f"{name} is a file; a checkpoint is a folder with config.json and model.safetensors.")
    if not (path / "config.json").is_file():
        if RunLayout(path).holds_a_model():
            raise ValueError(
                f"{name} is a lyra-train run folder, not a checkpoint; did you mean {RunLayout(path).best}?"
            )
        raise ValueError(f"{name} holds no config.json: not a saved model.")
    if not any((path / weights).is_file() for weights in WEIGHT_FILES):
        if pickled := [weights for weights in PICKLE_FILES if (path / weights).is_file()]:
            raise ValueError(
                f"{name} holds {pickled[0]} and no model.safetensors; lyra-hf loads safetensors weights only (other "
                "formats can run code when loaded). Convert it where you trust its origin."
            )
        raise ValueError(f"{name} holds no model.safetensors.")
    return str(path)


def hub_out_of_reach(timeout: float = HUB_CONNECT_SECONDS) -> str | None:
    """Why the Hub's endpoint (`HF_ENDPOINT`) cannot be reached, from one connection attempt (None when it can, or
    offline mode is on): so that a name that is not a local folder fails in one line rather than after the Hub
    client's retries."""
    if hf_constants.HF_HUB_OFFLINE:
        return None
    address = urllib.parse.urlsplit(hf_constants.ENDPOINT)
    try:
        socket.create_connection(
            (address.hostname, address.port or (443 if address.scheme == "https" else 80)), timeout=timeout
        ).close()
    except OSError as error:
        return f"{address.netloc}: {error.strerror or error}"
    return None


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
        raise OSError(
            f"{name}: no such local directory, and no Hub model could be loaded ({first_line.strip()})"
        ) from error
    tokenizer = load_tokenizer(name, source, options)
    check_model_and_tokenizer(config, tokenizer, str(Path(name, subfolder)) if subfolder else name)
    model_class = task_of(config).auto_class
    # transformers logs a multi-line load report for weights that do not fit; the error below names them instead.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(
            source, config=config, ignore_mismatched_sizes=True, output_loading_info=True, **options
        )
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
        resolve_checkpoint(name)  # refused at once when the Hub is out of reach and nothing is cached
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
    if not members or not all(
        isinstance(member, str) and HUB_ID.match(member) and "/" not in member for member in members
    ):
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
            raise ValueError(
                f"{name}: ensemble member {member} has another alphabet or other targets than {members[0]}."
            )
        if task_of(model.config) != task_of(first.config):
            raise ValueError(
                f"{name}: ensemble member {member} is a {task_of(model.config).name} model, {members[0]} a "
                f"{task_of(first.config).name} one."
            )
    return tokenizer, [model for _, model in loaded]


def member_columns(values: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The output columns of the models `load_models` gives, from `values` (rows, members, columns): `names[i]`, the
    members' mean of column i, then, with several members, `names[i]_std`, their standard deviation (NumPy's, ddof 0);
    lyra-predict and lyra-scan name an ensemble's uncertainty this way."""
    columns = {}
    for column, name in enumerate(names):
        columns[name] = values[:, :, column].mean(1)
        if values.shape[1] > 1:
            columns[f"{name}_std"] = values[:, :, column].std(1)
    return columns


__all__ = [
    "ENSEMBLE_FILE",
    "RunLayout",
    "resolve_checkpoint",
    "load_checkpoint",
    "load_tokenizer",
    "check_model_and_tokenizer",
    "ensemble_members",
    "load_models",
    "member_columns",
]
