"""lyra-train's options: one dataclass per group of flags, each field with its help text and flag type (transformers'
`run_glue.py` habit), and `TrainOptions`, which holds them all and checks them in one place.

`TrainOptions(train_file="train.csv", label_columns=["fitness"])` is a run from Python; `lyra-train` builds the same
object from its flags (`cli.add_options`), and every run writes it to `OUTPUT_DIR/options.json`, which
`lyra-train OUTPUT_DIR/options.json` reads back.
"""

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from typing import ClassVar

from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType

from ..cli import POSITIVE_INT, CpuOptions, bounded, comma_separated, option
from ..configuration_lyra import POOLING_MODES
from ..data.splits import routing_problems
from ..tasks import TASKS


# The experiment trackers Accelerate supports; each is the name of the package it needs too.
TRACKERS = sorted(tracker.value for tracker in LoggerType if tracker.value != "all")


def flag_name(name: str) -> str:
    """An option's flag: `split_column` -> `--split-column`."""
    return f"--{name.replace('_', '-')}"


class OptionsError(ValueError):
    """Options that contradict each other or name something that does not exist; `lyra-train` reports it as a
    usage error (exit 2)."""


@dataclass
class DataOptions:
    title: ClassVar[str] = "data (with no file flags: the built-in synthetic fitness landscape)"

    train_file: str | None = option(help="CSV, TSV or FASTA file of training sequences")
    validation_file: str | None = option(help="default: a seeded 10%% split carved from --train-file")
    test_file: str | None = option(help="scored once, with the best epoch's model")
    sequence_column: str = option("sequence", "column of the sequences (CSV, TSV)")
    label_columns: list[str] = option(
        ["label"], "comma-separated; several regression targets allowed", type=comma_separated
    )
    task: str = option("regression", "what the labels are", choices=list(TASKS))
    alphabet: str = option("protein", "protein, dna, rna (any case) or the letters of a custom alphabet")
    padding_characters: str = option("", "characters that mean padding in the data, e.g. J")
    max_length: int | None = option(
        help="refuse longer sequences (default: the longest a batch fits in half the available memory)",
        type=POSITIVE_INT,
    )
    unknown: str = option(
        "error",
        "characters outside the alphabet (e.g. U, O): reject the file, or map them to [UNK]",
        choices=("error", "unk"),
    )
    split_column: str | None = option(help="one file for every split: the column saying train or test (FLIP's `set`)")
    split_values: list[str] = option(
        ["train", "test"], "the --split-column values for train and test", type=comma_separated
    )
    validation_column: str | None = option(
        help="with --split-column: train rows true here (true/1/yes) are validation (FLIP's `validation`)"
    )
    fold_column: str | None = option(
        help="cross-validation: one run per fold of this column, each fold the test split once, side by side over the "
        "CPUs; several comma-separated columns are several schemes (ProteinGym's "
        "fold_random_5,fold_modulo_5,fold_contiguous_5), each with its out-of-fold predictions, pooled and per-fold "
        "metrics"
    )
    folds: list[str] | None = option(help="with --fold-column: only these folds, e.g. 0,2", type=comma_separated)
    test_fold: str | None = option(
        help="with --fold-column: one run with this fold as the test split (what cross-validation runs for each fold)"
    )
    ignore_label_characters: str = option(
        "", "per-residue tasks: label characters meaning 'no label here' (e.g. X), neither trained on nor scored"
    )
    label_mask_column: str | None = option(
        help="per-residue tasks: a column of one 0/1 per residue; 0 = neither trained on nor scored"
    )
    validation_part: int = option(
        0,
        "with validation carved from --train-file: carve the K-th tenth of its seeded shuffle instead of the first "
        "(what member K of --ensemble --ensemble-validation rotate carves)",
        type=bounded(int, minimum=0),
        metavar="K",
    )
    max_train_samples: int | None = option(
        help="use only the first N training sequences (quick runs)", type=POSITIVE_INT
    )
    max_eval_samples: int | None = option(
        help="use only the first N validation and test sequences", type=bounded(int, minimum=2)
    )


@dataclass
class ModelOptions:
    title: ClassVar[str] = "model"

    config: str | None = option(help="a LyraConfig JSON file, or a local or Hub checkpoint to start from")
    hidden_size: int | None = option(
        help="width d of the residual stream (default: the config's, 64)", type=POSITIVE_INT
    )
    state_size: int | None = option(
        help="S4D state size N, even (default: the config's, 64)", type=bounded(int, minimum=2)
    )
    num_s4d_layers: int | None = option(help="S4D layers (default: the config's, 1)", type=POSITIVE_INT)
    bidirectional: bool | None = option(
        help="S4D layers also look right of each position (default: on for token-classification, off otherwise)"
    )
    dropout: float | None = option(
        help="dropout probability (default: the config's, 0.2)", type=bounded(float, minimum=0, below=1)
    )
    pooling: str | None = option(
        help="how a sequence head pools the residues (default: the config's, mean)", choices=POOLING_MODES
    )
    site_effects: str = option(
        "auto",
        "a learnt weight per position and letter in the sequence head, started from a linear fit: on, off, or auto "
        "(regression on sequences of one length, with --global-epistasis auto: train the plain and the full model side "
        "by side and keep the one validation supports; otherwise on for a variant library)",
        choices=("auto", "on", "off"),
    )
    prior: str | None = option(
        help="a zero-shot prior of the sequences (e.g. an alignment's or a language model's scores; `lyra-prior` makes "
        "one): a CSV of mutant,score (ProteinGym's layout: A14D, A14D:G20K) or position,wild_type,letter,score; the "
        "model adds each variant's score, the sum of its substitutions', with a learnt weight",
        metavar="FILE",
    )
    prior_missing: float | None = option(
        help="with --prior: the score of a substitution the prior has none for (default: refuse the data that holds "
        "one)",
        type=bounded(float),
        metavar="SCORE",
    )
    global_epistasis: str = option(
        "auto",
        "pass a regression head's output through a learnt monotone (sigmoid) curve, fitted first to the linear start: "
        "on, off, or auto (the full candidate's, or on with site effects)",
        choices=("auto", "on", "off"),
    )

    # The fields that size a new model, which a pretrained checkpoint's own architecture fixes.
    SIZE_FIELDS: ClassVar[tuple[str, ...]] = (
        "hidden_size",
        "state_size",
        "num_s4d_layers",
        "bidirectional",
        "dropout",
        "pooling",
    )


@dataclass
class OptimizationOptions:
    title: ClassVar[str] = "training"

    epochs: int | None = option(
        help="passes over the training data (default: as many as fill --max-train-minutes; without a budget, 25 and at "
        "least 2,000 optimizer steps)",
        type=POSITIVE_INT,
    )
    early_stopping_patience: int | None = option(
        help="stop when the validation metric has not improved for this many epochs", type=POSITIVE_INT
    )
    batch_size: int = option(
        64,
        "per optimizer step (split over lyra-train's own CPU processes); per device under accelerate launch",
        type=POSITIVE_INT,
    )
    learning_rate: float = option(3e-3, "AdamW's peak learning rate", type=bounded(float, above=0))
    weight_decay: float = option(
        0.01, "AdamW's weight decay (not on biases, norms or S4D parameters)", type=bounded(float, minimum=0)
    )
    lr_scheduler: str = option("cosine", "decay after the warm-up", choices=("cosine", "linear", "constant"))
    warmup_ratio: float = option(
        0.05, "share of the steps that warm the learning rate up", type=bounded(float, minimum=0, below=1)
    )
    gradient_accumulation_steps: int = option(1, "batches per optimizer step", type=POSITIVE_INT)
    ema_decay: float | None = option(
        help="evaluate, keep and save an exponential moving average of the weights, e.g. 0.999",
        type=bounded(float, above=0, below=1),
    )
    mixed_precision: str = option(
        "no", "autocast precision (the S4D kernel and FFTs stay float32)", choices=("no", "bf16", "fp16")
    )
    metric_for_best_model: str | None = option(
        help="validation metric that picks the best epoch (default: spearmanr; f1 for classification; accuracy, e.g. "
        "Q3, per residue)"
    )
    seed: int = option(42, "model initialisation, dropout and batch order", type=bounded(int, minimum=0))
    data_seed: int | None = option(
        help="seed of the validation split carved from train and of the synthetic data (default: --seed)",
        type=bounded(int, minimum=0),
    )
    max_train_minutes: float | None = option(
        help="end the run within this many minutes of wall time, from its start (reading the data, the baseline and "
        "start fits) to its results (the test split scored), Python's start and imports excepted: the schedule "
        "(warm-up, decay) is sized to what the training loop gets, from the speed of the first steps",
        type=bounded(float, above=0),
    )
    num_workers: int = option(0, "DataLoader worker processes", type=bounded(int, minimum=0))


@dataclass
class RunOptions:
    title: ClassVar[str] = "the run"

    output_dir: str = option("lyra-output", "folder of the run: best/, checkpoints/, results.json, options.json")
    overwrite_output_dir: bool = option(False, "start afresh in a directory that holds a run")
    resume_from_checkpoint: str | None = option(help="a checkpoint directory, or 'latest' in --output-dir")
    ensemble: int | None = option(
        help="train a seed ensemble of N members (seeds SEED..SEED+N-1) in OUTPUT_DIR/member_<i>/, saved together in "
        "OUTPUT_DIR/best",
        type=bounded(int, minimum=2),
        metavar="N",
    )
    ensemble_validation: str | None = option(
        help="with --ensemble: member i validates on the i-th tenth of the training rows (rotate), so that the "
        "ensemble learns from every row and is validated on rows its members did not train on, or every member on the "
        "same split (shared); default: rotate when validation is carved from --train-file, else shared",
        choices=("shared", "rotate"),
    )
    tune: int | None = option(
        help='search hyperparameters over N trials with Optuna (pip install "lyra-hf[tune]"), chosen on validation; '
        "the chosen trial's model in OUTPUT_DIR/best, every trial in OUTPUT_DIR/trials.csv",
        type=POSITIVE_INT,
        metavar="N",
    )
    tune_storage: str | None = option(
        help="with --tune: the Optuna study in this database URL (e.g. sqlite:///study.db, postgresql://...), which "
        "processes on several machines share (default: a journal file in OUTPUT_DIR)",
        metavar="URL",
    )
    quiet: bool = option(False, "no progress bars or per-epoch lines, only the closing line")
    no_baseline: bool = option(
        False,
        "skip the one-hot baseline fitted beside the model (same train split, regularisation chosen on validation)",
    )
    allow_changed_inputs: bool = option(
        False,
        "rerun an OPTIONS_JSON although an input file is not the one its run read (its SHA-256 differs); results.json "
        "says which",
    )
    report_to: str | None = option(
        help="log the training loss and validation metrics per epoch to this experiment tracker, in OUTPUT_DIR/logs "
        "(Accelerate's trackers)",
        choices=TRACKERS,
    )


@dataclass
class SharingOptions:
    title: ClassVar[str] = "sharing (needs `hf auth login` or HF_TOKEN)"

    push_to_hub: str | None = option(help="push the best model, tokenizer, card and results.json", metavar="REPO_ID")
    hub_private: bool = option(False, "create the repo as private")
    hub_revision: str | None = option(help="push to this branch (created from main if needed)", metavar="BRANCH")
    hub_license: str | None = option(help="license of the weights for the card, e.g. apache-2.0 or cc-by-nc-4.0")
    hub_dataset_name: str | None = option(help="name of the training data for the card, e.g. a Hub dataset id")


# The groups in the order `lyra-train --help` shows them.
OPTION_GROUPS = (DataOptions, ModelOptions, OptimizationOptions, RunOptions, CpuOptions, SharingOptions)

# Options that change where a run executes, what it prints or what happens after it, but not what it computes: a
# resumed run may change them, and `options.json` leaves out the ones that only say how this run started.
RUN_ONLY_OPTIONS = (
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "quiet", "num_workers", "num_processes", "threads",
    "report_to", "no_baseline", "tune_storage", "push_to_hub", "hub_private", "hub_revision", "hub_license",
    "hub_dataset_name", "command", "rerun_of", "allow_changed_inputs",
)  # fmt: skip
NOT_IN_OPTIONS_FILE = ("overwrite_output_dir", "resume_from_checkpoint", "command", "rerun_of", "allow_changed_inputs")
# Options naming files whose content, not path, a run depends on.
INPUT_FILES = ("train_file", "validation_file", "test_file", "config", "prior")


@dataclass
class TrainOptions(SharingOptions, CpuOptions, RunOptions, OptimizationOptions, ModelOptions, DataOptions):
    """Every option of one lyra-train run, checked when made (`OptionsError`), with the defaults that depend on other
    options filled in (`data_seed`, `metric_for_best_model`, `ensemble_validation`). Runs derived from one (a fold, an
    ensemble member) are `dataclasses.replace` of it."""

    command: list[str] | None = None  # the command line that made the run, recorded in results.json
    rerun_of: str | None = (
        None  # the options.json this run reads (`lyra-train OPTIONS_JSON`), whose inputs it must match
    )

    def __post_init__(self):
        if isinstance(self.label_columns, str):
            self.label_columns = comma_separated(self.label_columns)
        self.label_columns = [column for column in self.label_columns if column]
        if isinstance(self.split_values, str):
            self.split_values = comma_separated(self.split_values)
        if self.folds is not None:
            self.folds = [
                fold for fold in (comma_separated(self.folds) if isinstance(self.folds, str) else self.folds) if fold
            ]
        if self.data_seed is None:
            self.data_seed = self.seed
        if self.ensemble_validation is None:
            self.ensemble_validation = "rotate" if self.ensemble and self.carves_validation else "shared"
        if self.metric_for_best_model is None and self.task in TASKS:
            self.metric_for_best_model = TASKS[self.task].default_metric
        self.check()

    def check(self) -> None:
        """Refuse options that contradict each other, naming the flags."""
        for problem in (*self.file_problems(), *self.split_problems(), *self.run_problems()):
            if problem:
                raise OptionsError(problem)

    def file_problems(self):
        if self.task not in TASKS:
            yield f"--task {self.task!r} is not one of {', '.join(TASKS)}"
        if self.train_file is None and (
            self.validation_file or self.test_file or self.split_column or self.fold_column
        ):
            yield "--validation-file, --test-file, --split-column and --fold-column need --train-file"
        if self.train_file is None and not TASKS[self.task].numeric_labels:
            yield f"the built-in synthetic data set is a regression task; --task {self.task} needs --train-file"
        if not self.label_columns:
            yield "--label-columns names no column"

    def split_problems(self):
        marks = (
            "ignore_label_characters"
            if self.ignore_label_characters
            else "label_mask_column"
            if self.label_mask_column
            else None
        )
        yield from routing_problems(
            flag_name,
            split_files=bool(self.validation_file or self.test_file),
            split_column=self.split_column,
            fold_column=self.fold_column,
            validation_column=self.validation_column,
            residue_marks=flag_name(marks) if marks else None,
            labels_per_residue=TASKS[self.task].labels_per_residue,
        )
        for name in ("folds", "test_fold"):
            if getattr(self, name) is not None and not self.fold_column:
                yield f"{flag_name(name)} needs --fold-column"
        if not self.carves_validation and (self.validation_part or self.ensemble_validation == "rotate"):
            flag = "--validation-part" if self.validation_part else "--ensemble-validation rotate"
            yield (
                f"{flag} carves validation from --train-file; here the validation split is given (a validation file "
                "or column, or the synthetic data's)"
            )
        if self.fold_column and "," in self.fold_column and self.test_fold is not None:
            yield f"--test-fold runs one fold of one scheme; --fold-column {self.fold_column!r} names several"
        if self.folds is not None and self.test_fold is not None:
            yield "give --folds (cross-validate those folds) or --test-fold (one run), not both"
        if len(self.split_values) != 2 or not all(self.split_values) or self.split_values[0] == self.split_values[1]:
            yield (
                "--split-values must be two different values, train's and test's, e.g. train,test; got "
                f"{','.join(self.split_values)!r}"
            )

    def run_problems(self):
        if self.fold_column and self.test_fold is None and self.push_to_hub:
            yield (
                "--push-to-hub with --fold-column would push every fold's model to one repo; push one fold's model "
                "afterwards, e.g. hf upload REPO_ID OUTPUT_DIR/fold_0/best"
            )
        if self.site_effects == "on" and TASKS[self.task].labels_per_residue:
            yield "--site-effects on adds a term to sequence heads; --task token-classification has a head per residue"
        if self.prior and TASKS[self.task].labels_per_residue:
            yield "--prior adds a term to sequence heads; --task token-classification has a head per residue"
        if self.prior_missing is not None and not self.prior:
            yield "--prior-missing needs --prior"
        if self.global_epistasis == "on" and not TASKS[self.task].numeric_labels:
            yield f"--global-epistasis on is for regression; --task {self.task} is not"
        if self.ensemble is not None and self.fold_column:
            yield "give --ensemble or --fold-column, not both"
        if self.ensemble_validation == "rotate" and self.ensemble is None:
            yield "--ensemble-validation rotate needs --ensemble N"
        yield from self.tune_problems()
        if self.ensemble is not None and self.resume_from_checkpoint not in (None, "latest"):
            yield "--ensemble resumes with --resume-from-checkpoint latest (each member from its own last checkpoint)"
        task, metric = TASKS[self.task], self.metric_for_best_model
        if metric not in task.metric_names and not any(metric.startswith(f"{name}_") for name in task.metric_names):
            yield f"--metric-for-best-model {metric!r} is not a {self.task} metric: {', '.join(task.metric_names)}"
        if self.report_to and self.report_to not in [tracker.value for tracker in get_available_trackers()]:
            yield f"--report-to {self.report_to} needs its package: pip install {self.report_to}"

    def tune_problems(self):
        if self.tune_storage and not self.tune:
            yield "--tune-storage needs --tune N"
        if self.tune and self.fold_column:
            yield "give --tune or --fold-column, not both: the search chooses on one validation split"
        if self.tune and importlib.util.find_spec("optuna") is None:
            yield '--tune needs Optuna: pip install "lyra-hf[tune]"'

    @property
    def carves_validation(self) -> bool:
        """Whether the validation split is carved from the training rows (no validation file or column is given)."""
        return self.train_file is not None and not (self.validation_file or self.validation_column)

    def options_file_values(self) -> dict:
        """What `OUTPUT_DIR/options.json` holds: every option but those that only say how this run started, its input
        files by absolute path, so that the file reruns the same run from any folder."""
        values = {key: value for key, value in dataclasses.asdict(self).items() if key not in NOT_IN_OPTIONS_FILE}
        return {
            key: os.path.abspath(value) if key in INPUT_FILES and value and os.path.exists(value) else value
            for key, value in values.items()
        }

    def tracker_config(self) -> dict:
        """The options as the trackers' hyperparameters, which take numbers, strings and booleans only."""
        values = dataclasses.asdict(self)
        return {
            key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in values.items()
            if key not in ("command", "rerun_of")
        }


__all__ = [
    "INPUT_FILES",
    "OPTION_GROUPS",
    "RUN_ONLY_OPTIONS",
    "TRACKERS",
    "DataOptions",
    "ModelOptions",
    "OptimizationOptions",
    "OptionsError",
    "RunOptions",
    "SharingOptions",
    "TrainOptions",
]
