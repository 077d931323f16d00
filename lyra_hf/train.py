"""`lyra-train`: train Lyra on sequence files (or a built-in synthetic fitness landscape) with Accelerate.

The same command runs on a laptop CPU, one GPU or many processes and nodes:

    lyra-train --train-file train.csv --label-columns fitness --output-dir runs/fitness
    accelerate launch --num_processes 4 scripts/train.py --train-file train.csv ...

Per epoch: validation metrics (gathered across processes, every sample exactly once), an atomic `accelerator.save_state`
checkpoint in `OUTPUT_DIR/checkpoints/epoch_NNNN`, and the best epoch so far as a `save_pretrained` model and tokenizer in
`OUTPUT_DIR/best`. After training, the best model is scored once on the test split and everything lands in
`OUTPUT_DIR/results.json`. `--resume-from-checkpoint latest` continues a killed run from its last complete epoch and
ends where the uninterrupted run would have. `--fold-column` cross-validates (one such run per fold) and `--ensemble N`
trains a seed ensemble (one run per member, then the ensemble in `OUTPUT_DIR/best`).
"""

import argparse
import difflib
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from accelerate import Accelerator
from accelerate.tracking import get_available_trackers
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, LoggerType, patch_environment, set_seed
from safetensors.torch import load_file, save_file
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, EvalPrediction

from . import LyraConfig, LyraTokenizer, cli
from .checkpoints import (
    ENSEMBLE_FILE,
    RunLayout,
    atomic_directory,
    check_model_and_tokenizer,
    load_tokenizer,
    locked_output_dir,
    raise_write_error,
    remove_outputs,
    replace_directory,
    resolve_checkpoint,
    write_json,
    write_text,
)
from .cpu import WorkerError, WorkerPool, configure_threads, launch_on_cpus, plan_processes, threads_from_environment, training_processes, usable_cpus
from .data import LABELS_COLUMN, SEQUENCE_COLUMN, check_columns, fold_values, label_names, load_sequence_dataset, read_table, synthetic_fitness_dataset, tokenize_dataset
from .hub import build_model_card, push_run
from .metrics import metric_is_better, metric_of
from .tasks import TASKS, Task


# The experiment trackers Accelerate supports; each is the name of the package it needs too.
TRACKERS = sorted(tracker.value for tracker in LoggerType if tracker.value != "all")
# Flags that change where a run executes, what it prints or what happens after it, but not what it computes: a resumed
# run may change them. Every other flag, and the content of every data file, must be the checkpoint's.
RUN_ONLY_FLAGS = (
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "quiet", "num_workers", "num_processes", "threads",
    "report_to", "push_to_hub", "hub_private", "hub_revision", "hub_license", "hub_dataset_name", "command",
)
INPUT_FILES = ("train_file", "validation_file", "test_file", "config")
TRAINING_STATE_FILE = "training_state.json"
# The moving average of the weights (with --ema-decay), saved with each checkpoint as safetensors, never pickled.
EMA_FILE = "ema.safetensors"
SIZE_FLAGS = {
    "hidden_size": "--hidden-size",
    "state_size": "--state-size",
    "num_s4d_layers": "--num-s4d-layers",
    "bidirectional": "--bidirectional",
    "dropout": "--dropout",
}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="lyra-train", description=__doc__)
    data = parser.add_argument_group("data (with no file flags: the built-in synthetic fitness landscape)")
    data.add_argument("--train-file", help="CSV, TSV or FASTA file of training sequences")
    data.add_argument("--validation-file", help="default: a seeded 10%% split carved from --train-file")
    data.add_argument("--test-file", help="scored once, with the best epoch's model")
    data.add_argument("--sequence-column", default="sequence", help="column of the sequences (CSV, TSV)")
    data.add_argument("--label-columns", default="label", help="comma-separated; several regression targets allowed")
    data.add_argument("--task", choices=list(TASKS), default="regression", help="what the labels are")
    data.add_argument("--alphabet", default="protein", help="protein, dna, rna (any case) or the letters of a custom alphabet")
    data.add_argument("--padding-characters", default="", help="characters that mean padding in the data, e.g. J")
    data.add_argument(
        "--max-length", type=cli.POSITIVE_INT, help="refuse longer sequences (default: the longest a batch fits in half the available memory)"
    )
    data.add_argument("--unknown", choices=("error", "unk"), default="error", help="characters outside the alphabet (e.g. U, O): reject the file, or map them to [UNK]")
    data.add_argument("--split-column", help="one file for every split: the column saying train or test (FLIP's `set`)")
    data.add_argument("--split-values", default="train,test", help="the --split-column values for train and test (default: train,test)")
    data.add_argument("--validation-column", help="with --split-column: train rows true here (true/1/yes) are validation (FLIP's `validation`)")
    data.add_argument("--fold-column", help="cross-validation: one run per fold of this column (e.g. ProteinGym's fold_random_5), each fold the test split once")
    data.add_argument("--folds", help="with --fold-column: only these folds, e.g. 0,2")
    data.add_argument("--ignore-label-characters", default="", help="per-residue tasks: label characters meaning 'no label here' (e.g. X), neither trained on nor scored")
    data.add_argument("--label-mask-column", help="per-residue tasks: a column of one 0/1 per residue; 0 = neither trained on nor scored")
    data.add_argument("--max-train-samples", type=cli.POSITIVE_INT, help="use only the first N training sequences (quick runs)")
    data.add_argument("--max-eval-samples", type=cli.bounded(int, minimum=2), help="use only the first N validation and test sequences")

    model = parser.add_argument_group("model")
    model.add_argument("--config", help="a LyraConfig JSON file, or a local or Hub checkpoint to start from")
    model.add_argument("--hidden-size", type=cli.POSITIVE_INT, help="width d of the residual stream (default: the config's, 64)")
    model.add_argument("--state-size", type=cli.bounded(int, minimum=2), help="S4D state size N, even (default: the config's, 64)")
    model.add_argument("--num-s4d-layers", type=cli.POSITIVE_INT, help="S4D layers (default: the config's, 1)")
    model.add_argument("--bidirectional", action="store_true", default=None, help="S4D layers also look right of each position")
    model.add_argument("--dropout", type=cli.bounded(float, minimum=0, below=1), help="dropout probability (default: the config's, 0.2)")

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=cli.POSITIVE_INT, default=25, help="passes over the training data")
    training.add_argument(
        "--batch-size", type=cli.POSITIVE_INT, default=64, help="per optimizer step (split over lyra-train's own CPU processes); per device under accelerate launch"
    )
    training.add_argument("--learning-rate", type=cli.bounded(float, above=0), default=3e-3, help="AdamW's peak learning rate")
    training.add_argument("--weight-decay", type=cli.bounded(float, minimum=0), default=0.01, help="AdamW's weight decay (not on biases, norms or S4D parameters)")
    training.add_argument("--lr-scheduler", choices=("cosine", "linear", "constant"), default="cosine", help="decay after the warm-up")
    training.add_argument("--warmup-ratio", type=cli.bounded(float, minimum=0, below=1), default=0.05, help="share of the steps that warm the learning rate up")
    training.add_argument("--gradient-accumulation-steps", type=cli.POSITIVE_INT, default=1, help="batches per optimizer step")
    training.add_argument(
        "--ema-decay", type=cli.bounded(float, above=0, below=1), help="evaluate, keep and save an exponential moving average of the weights, e.g. 0.999"
    )
    training.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no", help="autocast precision (the S4D kernel and FFTs stay float32)")
    training.add_argument("--metric-for-best-model", help="validation metric that picks the best epoch (default: spearmanr; f1 for classification; accuracy, e.g. Q3, per residue)")
    training.add_argument("--seed", type=cli.bounded(int, minimum=0), default=42, help="model initialisation, dropout and batch order")
    training.add_argument("--data-seed", type=cli.bounded(int, minimum=0), help="seed of the validation split carved from train and of the synthetic data (default: --seed)")
    training.add_argument(
        "--ensemble", type=cli.bounded(int, minimum=2), metavar="N", help="train a seed ensemble of N members (seeds SEED..SEED+N-1, one data split) in OUTPUT_DIR/member_<i>/, saved together in OUTPUT_DIR/best"
    )
    training.add_argument("--output-dir", default="lyra-output", help="folder of the run: best/, checkpoints/, results.json")
    training.add_argument("--overwrite-output-dir", action="store_true", help="start afresh in a directory that holds a run")
    training.add_argument("--resume-from-checkpoint", help="a checkpoint directory, or 'latest' in --output-dir")
    training.add_argument(
        "--max-train-minutes", type=cli.bounded(float, above=0), help="size the schedule (warm-up, decay) to this budget from the speed of the first steps; the run ends with its schedule"
    )
    training.add_argument("--num-workers", type=cli.bounded(int, minimum=0), default=0, help="DataLoader worker processes")
    training.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines, only the closing line")

    cli.add_cpu_flags(parser)

    hub = parser.add_argument_group("sharing (needs `hf auth login` or HF_TOKEN)")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", help="push the best model, tokenizer, card and results.json")
    hub.add_argument("--hub-private", action="store_true", help="create the repo as private")
    hub.add_argument("--hub-revision", metavar="BRANCH", help="push to this branch (created from main if needed)")
    hub.add_argument("--hub-license", help="license of the weights for the card, e.g. apache-2.0 or cc-by-nc-4.0")
    hub.add_argument("--hub-dataset-name", help="name of the training data for the card, e.g. a Hub dataset id")
    parser.add_argument(
        "--report-to", choices=TRACKERS, help="log the training loss and validation metrics per epoch to this experiment tracker, in OUTPUT_DIR/logs (Accelerate's trackers)"
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject bad flag values through `parser.error` (exit 2), and fill in the defaults that depend on other flags."""
    if args.train_file is None and (args.validation_file or args.test_file):
        parser.error("--validation-file and --test-file need --train-file")
    for flag in ("split_column", "fold_column"):
        if getattr(args, flag) and (args.train_file is None or args.validation_file or args.test_file):
            parser.error(f"--{flag.replace('_', '-')} reads every split from --train-file alone (no --validation-file or --test-file)")
    if args.split_column and args.fold_column:
        parser.error("give --split-column or --fold-column, not both")
    if args.validation_column and not args.split_column:
        parser.error("--validation-column needs --split-column")
    if (args.ignore_label_characters or args.label_mask_column) and not TASKS[args.task].labels_per_residue:
        flag = "--ignore-label-characters" if args.ignore_label_characters else "--label-mask-column"
        parser.error(f"{flag} marks residues without a label: it needs --task token-classification")
    if args.fold_column and args.push_to_hub:
        parser.error("--push-to-hub with --fold-column would push every fold's model to one repo; push one fold's model afterwards, e.g. hf upload REPO_ID OUTPUT_DIR/fold_0/best")
    if args.folds is not None and not args.fold_column:
        parser.error("--folds needs --fold-column")
    if args.ensemble is not None:
        if args.fold_column:
            parser.error("give --ensemble or --fold-column, not both")
        if args.resume_from_checkpoint not in (None, "latest"):
            parser.error("--ensemble resumes with --resume-from-checkpoint latest (each member from its own last checkpoint)")
    args.data_seed = args.seed if args.data_seed is None else args.data_seed
    args.split_values = [value.strip() for value in args.split_values.split(",")]
    if len(args.split_values) != 2 or not all(args.split_values) or args.split_values[0] == args.split_values[1]:
        parser.error(f"--split-values must be two different values, train's and test's, e.g. train,test; got {','.join(args.split_values)!r}")
    if args.train_file is None and not TASKS[args.task].numeric_labels:
        parser.error(f"the built-in synthetic data set is a regression task; --task {args.task} needs --train-file")
    if isinstance(args.label_columns, str):
        args.label_columns = [column.strip() for column in args.label_columns.split(",") if column.strip()]
    if not args.label_columns:
        parser.error("--label-columns names no column")
    task = TASKS[args.task]
    args.metric_for_best_model = args.metric_for_best_model or task.default_metric
    base_metric = args.metric_for_best_model
    if base_metric not in task.metric_names and not any(base_metric.startswith(f"{name}_") for name in task.metric_names):
        parser.error(f"--metric-for-best-model {base_metric!r} is not a {args.task} metric: {', '.join(task.metric_names)}")
    if args.report_to and args.report_to not in [tracker.value for tracker in get_available_trackers()]:
        parser.error(f"--report-to {args.report_to} needs its package: pip install {args.report_to}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def parameter_groups(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: the parameters a module tags with optimizer settings of their own (its `_optim`, by
    parameter name: the S4D recipe's SSM parameters, without weight decay and at `config.ssm_learning_rate` when set),
    one group per setting; biases, norm weights and other vectors without weight decay; the remaining matrices with
    `weight_decay`. Works for `Trainer` too (`optimizers=(AdamW(groups), None)`)."""
    tagged = {}
    for module in model.modules():
        for name, settings in getattr(module, "_optim", {}).items():
            tagged[id(getattr(module, name))] = settings
    groups = {"decay": {"params": [], "weight_decay": weight_decay, "lr": learning_rate}, "no_decay": {"params": [], "weight_decay": 0.0, "lr": learning_rate}}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in tagged:
            settings = {"weight_decay": weight_decay, "lr": learning_rate, **tagged[id(parameter)]}
            groups.setdefault(json.dumps(settings, sort_keys=True), {"params": [], **settings})["params"].append(parameter)
        else:
            groups["decay" if parameter.ndim >= 2 else "no_decay"]["params"].append(parameter)
    return [group for group in groups.values() if group["params"]]


def memory_bound_max_length(config, batch_size: int) -> int:
    """The longest sequence whose padded training batch (`batch_size` rows, forward and backward) needs at most half of
    the memory available now. Measured: about 4 bytes x hidden_size x (40 + 16 x S4D layers) per token (13.5 KB per
    token for the default model at L = 1,000 and 4,000)."""
    bytes_per_token = 4 * config.hidden_size * (40 + 16 * config.num_s4d_layers)
    try:
        with open("/proc/meminfo") as meminfo:
            available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, available // 2 // (batch_size * bytes_per_token))


def load_data(args, tokenizer, max_length: int):
    """The splits (`train`, `validation`, optionally `test`) and the target or class names."""
    if args.train_file is None:
        dataset, names = synthetic_fitness_dataset(seed=args.data_seed), ["fitness"]
    else:
        dataset, names = load_files(args, tokenizer, max_length)
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_eval_samples}
    for split, limit in limits.items():
        if split in dataset and limit is not None:
            dataset[split] = dataset[split].select(range(min(limit, len(dataset[split]))))
    if TASKS[args.task].numeric_labels:
        check_labels_vary(dataset, names, args.metric_for_best_model)
    return dataset, names


def check_labels_vary(dataset, names: list[str], metric: str) -> None:
    """Refuse regression targets that are constant in train (nothing to learn), or in validation when the metric that
    picks the best epoch is undefined for constant labels (a correlation with a constant has no value)."""
    for split in ("train", "validation"):
        labels = np.asarray(dataset[split][LABELS_COLUMN], dtype=np.float64).reshape(len(dataset[split]), -1)
        for column, name in enumerate(names):
            if np.ptp(labels[:, column]) > 0:
                continue
            value = f"every {split} label of {name!r} is {labels[0, column]:g}"
            if split == "train":
                raise ValueError(f"{value}: there is nothing to learn; check --label-columns.")
            if metric_of(metric).undefined_for_constant_labels:
                raise ValueError(
                    f"{value}, so --metric-for-best-model {metric} is undefined there (a correlation with a constant has "
                    "no value); give a validation split whose labels vary, or --metric-for-best-model mse."
                )


def load_files(args, tokenizer, max_length: int):
    dataset = load_sequence_dataset(
        args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        sequence_column=args.sequence_column,
        label_columns=args.label_columns,
        task=args.task,
        alphabet=tokenizer.letters,
        padding_characters=tokenizer.padding_characters,
        unknown=args.unknown,
        seed=args.data_seed,
        max_length=max_length,
        split_column=args.split_column,
        split_names=tuple(args.split_values),
        validation_column=args.validation_column,
        fold_column=args.fold_column,
        test_fold=getattr(args, "test_fold", None),
        ignore_label_characters=args.ignore_label_characters,
        mask_column=args.label_mask_column,
    )
    return dataset, (args.label_columns if TASKS[args.task].numeric_labels else label_names(dataset))


def is_checkpoint(path: str) -> bool:
    """A directory or Hub id holding model weights (rather than a config JSON to start from); checked."""
    if path.endswith(".json"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such config file: {path}")
        return False
    resolve_checkpoint(path)
    return True


def build_tokenizer(args):
    """The checkpoint's own tokenizer when `--config` names one to fine-tune (checked against its model), else a new
    one for `--alphabet`."""
    if args.config and is_checkpoint(args.config):
        source = resolve_checkpoint(args.config)
        tokenizer = load_tokenizer(args.config, source, {})
        if not isinstance(tokenizer, LyraTokenizer):
            raise ValueError(f"--config {args.config} holds a {type(tokenizer).__name__}, not a LyraTokenizer.")
        check_model_and_tokenizer(AutoConfig.from_pretrained(source), tokenizer, f"--config {args.config}")
        return tokenizer
    return LyraTokenizer.for_alphabet(args.alphabet, padding_characters=args.padding_characters)


# Keys a saved config.json carries besides the configuration's own fields.
SAVED_CONFIG_KEYS = ("auto_map", "torch_dtype", "use_cache")


def read_config_file(path: str) -> LyraConfig:
    """A LyraConfig from a JSON file the user wrote. A file that is not a JSON object, or a key LyraConfig does not
    know (a typo such as `hiden_size` would otherwise train at the default width), fails naming the file and the key;
    the values' types and ranges are LyraConfig's own checks."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--config {path} is not a JSON file ({error}).") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} must hold a JSON object of LyraConfig fields, got a {type(values).__name__}.")
    known = {*LyraConfig().to_dict(), *LyraConfig.attribute_map, *SAVED_CONFIG_KEYS}
    if unknown := [key for key in values if key not in known]:
        hints = [difflib.get_close_matches(key, known, n=1) for key in unknown]
        named = ", ".join(f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") for key, hint in zip(unknown, hints))
        raise ValueError(f"--config {path}: unknown key {named}; LyraConfig's fields are listed in its docstring.")
    try:
        return LyraConfig(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--config {path}: {error}") from None


def pretrained_checkpoint(args) -> str | None:
    """The checkpoint `--config` names to fine-tune (None for a config JSON or none), refused with size flags."""
    if not (args.config and is_checkpoint(args.config)):
        return None
    if sizes := [flag for field, flag in SIZE_FLAGS.items() if getattr(args, field) is not None]:
        raise ValueError(f"{', '.join(sizes)} cannot resize the pretrained checkpoint {args.config}; drop them or start from a config JSON.")
    return resolve_checkpoint(args.config)


def build_config(args, tokenizer):
    """The architecture to train: a checkpoint's, a config JSON's, or the default, with the size flags applied."""
    if checkpoint := pretrained_checkpoint(args):
        return AutoConfig.from_pretrained(checkpoint)
    sizes = {field: getattr(args, field) for field in SIZE_FLAGS if getattr(args, field) is not None}
    config = read_config_file(args.config) if args.config else LyraConfig()
    tokens = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "alphabet": tokenizer.letters}
    for field, value in {**sizes, **tokens}.items():
        setattr(config, field, value)
    config.validate_architecture()
    return config


def build_model(args, tokenizer, names: list[str], config=None):
    """A fresh model from `config` (default: `build_config`), or a checkpoint to fine-tune with a head for this task's
    labels."""
    task = TASKS[args.task]
    labels = {"id2label": dict(enumerate(names)), "label2id": {name: index for index, name in enumerate(names)}}
    if checkpoint := pretrained_checkpoint(args):
        config = AutoConfig.from_pretrained(checkpoint, num_labels=len(names), problem_type=task.problem_type, **labels)
        # A new task gets a new head: weights of a head with another number of outputs are not loaded.
        return task.model_class.from_pretrained(checkpoint, config=config, ignore_mismatched_sizes=True)
    config = config or build_config(args, tokenizer)
    config.num_labels, config.problem_type = len(names), task.problem_type
    config.id2label, config.label2id = labels["id2label"], labels["label2id"]
    return task.model_class(config)


def sort_by_length(dataset):
    lengths = dataset.map(lambda batch: {"length": [len(ids) for ids in batch["input_ids"]]}, batched=True)
    return lengths.sort("length").remove_columns("length")


def evaluate(models, dataloader, accelerator, compute_metrics, task: Task, description: str, progress: bool = True) -> dict:
    """Metrics of a model, or of a list of models' mean prediction (`Task.combine_logits`), on a (prepared) dataloader;
    predictions are gathered across processes with `gather_for_metrics`, which drops the samples the last batch
    repeats to even out the processes."""
    models = models if isinstance(models, list) else [models]
    for model in models:
        model.eval()
    predictions, references = [], []
    for batch in tqdm(dataloader, desc=description, leave=False, disable=not (progress and accelerator.is_local_main_process)):
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = task.combine_logits([model(**batch).logits.float() for model in models])
        if task.labels_per_residue:
            # Batches differ in length across processes: pad before gathering, then keep the labelled positions.
            logits = accelerator.pad_across_processes(logits, dim=1)
            labels = accelerator.pad_across_processes(labels, dim=1, pad_index=-100)
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        if task.labels_per_residue:
            keep = labels != -100
            logits, labels = logits[keep][:, None, :], labels[keep][:, None]
        predictions.append(logits.cpu().numpy())
        references.append(labels.cpu().numpy())
    predictions, references = np.concatenate(predictions), np.concatenate(references)
    results = compute_metrics(EvalPrediction(predictions=predictions, label_ids=references))
    results[task.count_key] = int(len(references))
    return defined_metrics({key: float(value) if isinstance(value, (float, np.floating)) else value for key, value in results.items()})


def defined_metrics(metrics: dict) -> dict:
    """`metrics` with the undefined ones (NaN) as None and a `note` saying why, so that results.json stays strict JSON
    and a reader learns the cause: a correlation with constant labels or constant predictions has no value."""
    undefined = [key for key, value in metrics.items() if isinstance(value, float) and not math.isfinite(value)]
    if not undefined:
        return metrics
    note = f"{', '.join(undefined)} undefined (null): the labels or the predictions are constant, and a correlation with a constant has no value"
    return {**{key: None if key in undefined else value for key, value in metrics.items()}, "note": note}


def format_metric(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


class LearningRateSchedule:
    """The learning-rate factor at each step: linear warm-up over `warmup_ratio` of `steps` optimizer steps, then
    cosine or linear decay to 0 at the last step ("constant": 1 throughout, without warm-up, as in transformers). Its
    length `steps` may change while it runs: `--max-train-minutes` sizes it from the speed of the first steps.
    Accelerate steps a scheduler once per process for each optimizer step, so `scheduler_step` counts `processes` per
    optimizer step."""

    def __init__(self, kind: str, warmup_ratio: float, steps: int, processes: int = 1):
        self.kind, self.warmup_ratio, self.steps, self.processes = kind, warmup_ratio, steps, processes

    def __call__(self, scheduler_step: int) -> float:
        if self.kind == "constant":
            return 1.0
        step, warmup = scheduler_step // self.processes, int(self.warmup_ratio * self.steps)
        if step < warmup:
            return step / warmup
        progress = min(1.0, (step - warmup) / max(1, self.steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress


# Steps timed before `--max-train-minutes` sizes the schedule (fewer when an epoch is shorter).
BUDGET_MEASURED_STEPS = 10
# A validation batch costs about a third of a training step (a forward pass without the backward and the optimizer).
EVALUATION_STEP_FRACTION = 1 / 3


def budgeted_steps(args, accelerator, steps_done: int, planned: int, elapsed: float, steps_per_epoch: int, validation_batches: int) -> int:
    """The optimizer steps that fit in `--max-train-minutes`, from the time the first `steps_done` took and the
    validation pass that ends each epoch, capped by `planned` (what --epochs gives); every process takes the smallest
    estimate, so that all stop at the same step."""
    seconds_per_step = elapsed / steps_done
    epoch_overhead = 1 + validation_batches * EVALUATION_STEP_FRACTION / steps_per_epoch
    remaining = 60 * args.max_train_minutes - elapsed
    fit = steps_done + int(remaining / (seconds_per_step * epoch_overhead))
    estimate = torch.tensor([max(steps_done, min(planned, fit))], device=accelerator.device)
    return int(accelerator.gather(estimate).min())


def check_metric_name(args, names: list[str]) -> None:
    available = TASKS[args.task].metric_keys(names)
    if args.metric_for_best_model not in available:
        raise ValueError(f"--metric-for-best-model {args.metric_for_best_model!r} is not among the validation metrics {available}.")


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (incomplete ones are written under a temporary name and never match)."""
    checkpoints = [path for path in RunLayout(output_dir).saved_checkpoints() if (path / TRAINING_STATE_FILE).is_file()]
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(accelerator, output_dir: Path, epoch: int, state: dict, ema=None, keep: int = 2) -> None:
    """`accelerator.save_state` into a temporary directory, renamed once every process has written its part, so that
    a run killed while saving leaves the previous checkpoint as the latest."""
    final = RunLayout(output_dir).checkpoint(epoch)
    temporary = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(temporary))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if ema is not None:
                save_file(ema.state_dict(), temporary / EMA_FILE)
            write_json(temporary / TRAINING_STATE_FILE, state)
            replace_directory(temporary, final)
    except BaseException as error:
        # Every process writes its part, so this is not `atomic_directory`; the cleanup and the error are the same.
        shutil.rmtree(temporary, ignore_errors=True)
        raise_write_error(error, final)
    if accelerator.is_main_process:
        for old in RunLayout(output_dir).saved_checkpoints()[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def save_best(accelerator, model, tokenizer, output_dir: Path) -> None:
    if accelerator.is_main_process:
        with atomic_directory(RunLayout(output_dir).best) as temporary:
            accelerator.unwrap_model(model).save_pretrained(temporary)
            tokenizer.save_pretrained(temporary)
    accelerator.wait_for_everyone()


def check_output_dir(args, output_dir: Path) -> None:
    """Refuse to write over an earlier run (or a `best/` folder of the user's) unless told to continue or replace it;
    the replacing itself waits until every input has been checked."""
    found = RunLayout(output_dir).existing_outputs()
    if found and not args.resume_from_checkpoint and not args.overwrite_output_dir:
        raise ValueError(
            f"--output-dir {output_dir} already holds a run ({', '.join(found)}); pass --resume-from-checkpoint latest "
            "to continue it or --overwrite-output-dir to replace it."
        )


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_settings(args: argparse.Namespace) -> dict:
    """What a run computes from, as JSON values: every flag but `RUN_ONLY_FLAGS`, with each input file (data, config
    JSON) by the SHA-256 of its content rather than its path (a moved file is the same data, an edited one is not)."""
    settings = {key: value for key, value in vars(args).items() if key not in RUN_ONLY_FLAGS + INPUT_FILES}
    settings["input_sha256"] = {
        key: file_sha256(path) for key in INPUT_FILES if (path := getattr(args, key, None)) and os.path.isfile(path)
    }
    return json.loads(json.dumps(settings))


def flag_name(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def check_resume_settings(args: argparse.Namespace, checkpoint: Path) -> None:
    """Refuse to resume `checkpoint` with settings other than those it was trained with, naming each difference
    (a resumed run continues that run: its data, architecture, optimizer and schedule)."""
    saved = json.loads((checkpoint / TRAINING_STATE_FILE).read_text()).get("settings")
    if saved is None:  # written before runs recorded their settings
        return
    now = run_settings(args)
    differences = [
        f"{flag_name(key)} {now.get(key)!r} (checkpoint: {saved.get(key)!r})"
        for key in sorted((set(now) | set(saved)) - {"input_sha256"})
        if now.get(key) != saved.get(key)
    ]
    files = sorted(set(now["input_sha256"]) | set(saved.get("input_sha256", {})))
    differences += [f"{flag_name(key)} is not the file it was" for key in files if now["input_sha256"].get(key) != saved.get("input_sha256", {}).get(key)]
    if differences:
        raise ValueError(
            f"--resume-from-checkpoint {checkpoint}: this run differs from the one checkpointed: {'; '.join(differences)}. "
            f"Resume with its settings (results.json and {TRAINING_STATE_FILE} list them) or start afresh with --overwrite-output-dir."
        )


def checkpoint_to_resume(args: argparse.Namespace, output_dir: Path) -> Path | None:
    """The checkpoint `--resume-from-checkpoint` names (`latest`: the newest in the output folder; None when there is
    none yet), checked to be complete and to match this run's settings."""
    if not args.resume_from_checkpoint:
        return None
    checkpoint = latest_checkpoint(output_dir) if args.resume_from_checkpoint == "latest" else Path(args.resume_from_checkpoint)
    if checkpoint is None:
        return None
    if not (checkpoint / TRAINING_STATE_FILE).is_file():
        raise ValueError(f"--resume-from-checkpoint {checkpoint} is not a complete lyra-train checkpoint (no {TRAINING_STATE_FILE}).")
    check_resume_settings(args, checkpoint)
    return checkpoint


def tracker_config(args: argparse.Namespace) -> dict:
    """The run's flags as the trackers' hyperparameters, which take numbers, strings and booleans only."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in vars(args).items() if key != "command"}


def run_record(args: argparse.Namespace, input_sha256: dict[str, str]) -> dict:
    """How a run was made, for its results.json: the command line, every flag's value, the input files' digests (as
    `run_settings` took them) and the versions of what ran it. The command line, run again, makes the run again."""
    from . import __version__

    versions = {"lyra_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    flags = {key: value for key, value in vars(args).items() if key != "command"}
    return {"command": getattr(args, "command", None), "settings": json.loads(json.dumps(flags)), "input_sha256": input_sha256, "versions": versions}


@dataclass
class TrainingRun:
    """What `train` leaves behind: the results written to results.json, the trained model (unwrapped, best epoch's
    weights not loaded) and the accelerator."""

    results: dict
    model: torch.nn.Module
    accelerator: Accelerator


def train(args: argparse.Namespace, lock: bool = True) -> TrainingRun:
    """Train in this process, or as one process of a torch.distributed job (RANK/WORLD_SIZE set); `lock=False` when the
    process that launched the job holds the output folder's lock."""
    output_dir = Path(args.output_dir)
    # Several processes on a machine without an accelerator (e.g. `accelerate launch --multi_gpu --num_processes 2` or
    # torchrun on CPUs): accelerate forms the gloo process group only when told to use the CPU, and would otherwise
    # run independent copies of the training.
    several_processes_on_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
    accelerator = Accelerator(
        cpu=several_processes_on_cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        # Gradients live in DDP's all-reduce buckets rather than being copied in and out of them each step: the same
        # values, one copy fewer (BENCHMARKS.md, "CPU use"). Ignored in a single process.
        kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)],
        log_with=args.report_to,
        project_dir=str(output_dir),
    )
    # The main process writes every output, so it alone holds the folder's lock, for the whole run.
    with locked_output_dir(output_dir) if accelerator.is_main_process and lock else nullcontext():
        return train_in(output_dir, args, accelerator)


def train_in(output_dir: Path, args: argparse.Namespace, accelerator: Accelerator) -> TrainingRun:
    if accelerator.is_main_process:
        check_output_dir(args, output_dir)
    accelerator.wait_for_everyone()
    checkpoint = checkpoint_to_resume(args, output_dir)
    set_seed(args.seed)

    task = TASKS[args.task]
    tokenizer = build_tokenizer(args)
    config = build_config(args, tokenizer)
    max_length = args.max_length or memory_bound_max_length(config, args.batch_size)
    with accelerator.main_process_first():
        dataset, names = load_data(args, tokenizer, max_length)
        tokenized = tokenize_dataset(dataset, tokenizer)
        for split in tokenized:
            if split != "train":  # evaluation order is free: batches of similar length waste little on padding
                tokenized[split] = sort_by_length(tokenized[split])
    if "test" not in tokenized and accelerator.is_main_process:
        print("lyra-train: no --test-file; results.json will have no test metrics.", file=sys.stderr)
    check_metric_name(args, names)
    model = build_model(args, tokenizer, names, config)
    # Every input is checked: only now may an earlier run be replaced.
    if accelerator.is_main_process and args.overwrite_output_dir and not args.resume_from_checkpoint:
        remove_outputs(output_dir, RunLayout.OUTPUTS)
    accelerator.wait_for_everyone()
    collator = task.collator(tokenizer)
    loaders = {
        split: DataLoader(
            tokenized[split],
            batch_size=args.batch_size,
            shuffle=split == "train",
            collate_fn=collator,
            num_workers=args.num_workers,
        )
        for split in tokenized
    }
    # The fused kernel updates every parameter in one pass, where torch's default on a CPU loops over the tensors
    # (BENCHMARKS.md, "CPU use"); Trainer's default optimizer is the same.
    fused = True if accelerator.device.type in ("cpu", "cuda") else None  # None: torch's own choice on other devices
    optimizer = torch.optim.AdamW(parameter_groups(model, args.learning_rate, args.weight_decay), fused=fused)
    steps_per_epoch = math.ceil(len(loaders["train"]) / accelerator.num_processes / args.gradient_accumulation_steps)
    schedule = LearningRateSchedule(args.lr_scheduler, args.warmup_ratio, args.epochs * steps_per_epoch, accelerator.num_processes)
    scheduler = LambdaLR(optimizer, schedule)
    model, optimizer, scheduler, train_loader, *eval_loaders = accelerator.prepare(
        model, optimizer, scheduler, loaders["train"], *[loaders[split] for split in loaders if split != "train"]
    )
    eval_loaders = dict(zip([split for split in loaders if split != "train"], eval_loaders))
    # With --ema-decay, the moving average of the weights (identical on every process, as the weights are) is what is
    # evaluated, chosen and saved; the optimizer keeps training the raw weights.
    ema = None
    if args.ema_decay:
        ema = AveragedModel(accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay))
    evaluated_model = model if ema is None else ema.module
    compute_metrics = task.compute_metrics(names)

    state = {"epoch": 0, "best_epoch": None, "best_metric": None, "history": [], "train_seconds": 0.0, "train_samples": 0, "steps": 0}
    if args.resume_from_checkpoint and checkpoint is None and accelerator.is_main_process:
        print(f"lyra-train: no checkpoint in {RunLayout(output_dir).checkpoints} yet; starting from scratch.", file=sys.stderr)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / TRAINING_STATE_FILE).read_text())
        if ema is not None:
            if not (checkpoint / EMA_FILE).is_file():
                raise ValueError(f"--ema-decay is set but checkpoint {checkpoint} was written without it (no {EMA_FILE}).")
            ema.load_state_dict(load_file(checkpoint / EMA_FILE))  # copied onto the parameters' device
        if accelerator.is_main_process:
            print(f"lyra-train: resumed from {checkpoint} after epoch {state['epoch']}.", file=sys.stderr)
    state["settings"] = run_settings(args)  # compared when the run is resumed
    if args.report_to:
        accelerator.init_trackers(RunLayout.LOGS, config=tracker_config(args))
    # A resumed run keeps the schedule it sized; checkpoints from before schedules were sized ran --epochs in full.
    schedule.steps = state.setdefault("schedule_steps", schedule.steps)
    state.setdefault("steps", state["epoch"] * steps_per_epoch)

    budget_started = time.monotonic()
    sized = not args.max_train_minutes or state["epoch"] > 0
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        if state["steps"] >= schedule.steps:
            break
        model.train()
        train_loader.set_epoch(epoch)
        started = time.perf_counter()
        samples, loss_sum, batches = 0, 0.0, 0
        progress = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", disable=not accelerator.is_local_main_process or args.quiet)
        for batch in progress:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if ema is not None and accelerator.sync_gradients:
                ema.update_parameters(accelerator.unwrap_model(model))
            samples += len(batch["input_ids"]) * accelerator.num_processes
            loss_sum, batches = loss_sum + loss.item(), batches + 1
            progress.set_postfix(loss=f"{loss_sum / batches:.4f}", refresh=False)
            state["steps"] += accelerator.sync_gradients
            if not sized and state["steps"] == min(BUDGET_MEASURED_STEPS, steps_per_epoch):
                schedule.steps = state["schedule_steps"] = budgeted_steps(
                    args, accelerator, state["steps"], schedule.steps, time.monotonic() - budget_started, steps_per_epoch, len(eval_loaders["validation"])
                )
                sized = True
            if state["steps"] >= schedule.steps:
                break
        state["train_seconds"] += time.perf_counter() - started
        state["train_samples"] += samples

        metrics = evaluate(evaluated_model, eval_loaders["validation"], accelerator, compute_metrics, task, "validation", not args.quiet)
        if args.metric_for_best_model not in metrics:  # AUROC is left out when a class is missing from validation
            raise ValueError(f"--metric-for-best-model {args.metric_for_best_model!r} is not among the validation metrics {sorted(metrics)}.")
        train_loss = accelerator.reduce(torch.tensor([loss_sum, batches], device=accelerator.device, dtype=torch.float64), "sum")
        state["history"].append({"epoch": epoch, "train_loss": float(train_loss[0] / train_loss[1]), **metrics})
        if args.report_to:
            logged = {f"validation/{key}": value for key, value in metrics.items() if isinstance(value, float)}
            accelerator.log({"train/loss": state["history"][-1]["train_loss"], **logged}, step=epoch)
        if accelerator.is_main_process and not args.quiet:
            shown = ", ".join(f"{key} {format_metric(value)}" for key, value in metrics.items() if isinstance(value, float | None))
            tqdm.write(f"epoch {epoch}: validation {shown}")
        if metric_is_better(args.metric_for_best_model, metrics[args.metric_for_best_model], state["best_metric"]):
            state["best_epoch"], state["best_metric"] = epoch, metrics[args.metric_for_best_model]
            save_best(accelerator, evaluated_model, tokenizer, output_dir)
        state["epoch"] = epoch
        save_checkpoint(accelerator, output_dir, epoch, state, ema)
    stopped_early = schedule.steps < args.epochs * steps_per_epoch
    if stopped_early and accelerator.is_main_process:
        print(
            f"lyra-train: --max-train-minutes {args.max_train_minutes}: the schedule was sized to {schedule.steps:,} steps "
            f"and ended in epoch {state['epoch']}.",
            file=sys.stderr,
        )

    best_model = accelerator.prepare_model(task.model_class.from_pretrained(RunLayout(output_dir).best), evaluation_mode=True)
    results = {
        "validation": next(entry for entry in state["history"] if entry["epoch"] == state["best_epoch"]),
        "test": (
            evaluate(best_model, eval_loaders["test"], accelerator, compute_metrics, task, "test", not args.quiet)
            if "test" in eval_loaders
            else None
        ),
        "best_epoch": state["best_epoch"],
        "metric_for_best_model": args.metric_for_best_model,
        "ema_decay": args.ema_decay,
        "history": state["history"],
        "num_parameters": accelerator.unwrap_model(model).num_parameters(),
        "num_processes": accelerator.num_processes,
        "train_seconds": state["train_seconds"],
        "samples_per_second": state["train_samples"] / state["train_seconds"] if state["train_seconds"] else None,
        "stopped_early": stopped_early,
        "steps": state["steps"],
        "schedule_steps": schedule.steps,
        **run_record(args, state["settings"]["input_sha256"]),
    }
    if args.report_to:
        accelerator.end_training()
    if accelerator.is_main_process:
        write_json(RunLayout(output_dir).results, results)
        card = run_card(args, accelerator.unwrap_model(best_model), tokenizer, results, dataset, describe_protocol(args, results))
        write_text(RunLayout(output_dir).best / "README.md", str(card))
        if args.push_to_hub:
            url = push_run(output_dir, args.push_to_hub, card, private=args.hub_private, revision=args.hub_revision)
            print(f"lyra-train: pushed to {url}", file=sys.stderr)
    accelerator.wait_for_everyone()
    return TrainingRun(results=results, model=accelerator.unwrap_model(model), accelerator=accelerator)


def describe_data(args, dataset) -> str:
    sizes = ", ".join(f"{split} {len(rows):,}" for split, rows in dataset.items())
    if args.train_file is None:
        return f"The built-in synthetic epistatic fitness landscape of `lyra-train` (seed {args.data_seed}): {sizes} sequences."
    files = ", ".join(f"`{Path(path).name}`" for path in (args.train_file, args.validation_file, args.test_file) if path)
    return f"Files {files}; sequence column `{args.sequence_column}`, labels `{', '.join(args.label_columns)}`; {sizes} sequences."


def describe_protocol(args, results: dict) -> str:
    if args.validation_file:
        validation = "the validation file"
    elif args.validation_column:
        validation = f"the rows marked in column `{args.validation_column}`"
    else:
        validation = f"a validation split carved from train (seed {args.data_seed})"
    split = ""
    if args.split_column:
        split = f"Splits from column `{args.split_column}` ({' / '.join(args.split_values)}). "
    elif getattr(args, "test_fold", None) is not None:
        split = f"Cross-validation: fold {args.test_fold} of column `{args.fold_column}` was the test split. "
    return split + (
        f"`lyra-train`, {len(results['history'])} epoch(s), AdamW (learning rate {args.learning_rate}, weight decay "
        f"{args.weight_decay}, {args.lr_scheduler} schedule), batch size {args.batch_size} per device on "
        f"{results['num_processes']} process(es)"
        + (f", weights averaged (exponential moving average, decay {args.ema_decay})" if args.ema_decay else "")
        + f". The best epoch ({results['best_epoch']}) was chosen on {validation} "
        f"by {args.metric_for_best_model}; the test split was scored once, with that model."
    )


def run_card(args: argparse.Namespace, model, tokenizer, results: dict, dataset, protocol: str, ensemble_members: list[str] | None = None):
    """The model card of a run's `best/` (or an ensemble's, with `ensemble_members`), also what `--push-to-hub` pushes."""
    return build_model_card(
        model,
        tokenizer,
        args.push_to_hub or f"local/{Path(args.output_dir).name}",
        results,
        dataset_name=args.hub_dataset_name or (Path(args.train_file).stem if args.train_file else "synthetic-epistatic-landscape"),
        license=args.hub_license,
        training_data=describe_data(args, dataset),
        protocol=protocol,
        ensemble_members=ensemble_members,
    )


def summary_line(args: argparse.Namespace, training: TrainingRun) -> str | None:
    """The closing line the main process prints."""
    if not training.accelerator.is_main_process:
        return None
    results, metric = training.results, training.results["metric_for_best_model"]
    split = "test" if results["test"] else "validation"
    return (
        f"best epoch {results['best_epoch']}: {split} {metric} {format_metric(results[split][metric])}; model and "
        f"tokenizer in {RunLayout(args.output_dir).best}"
        + (f" ({results[split]['note']})" if "note" in results[split] else "")
    )


def train_worker(args: argparse.Namespace) -> str | None:
    """One process of `train_on_cpus`."""
    configure_threads(1)
    # DDP compares each gradient's strides with its bucket's, also along a dimension of size 1 (the depthwise
    # convolution's (E, 1, 3) weight), where any stride describes the same memory: nothing to warn about.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return summary_line(args, train(args, lock=False))


def train_on_cpus(args: argparse.Namespace, processes: int) -> str | None:
    """Train as one torch.distributed job of up to `processes` single-threaded CPU processes. Without
    `--num-processes`, a run whose steps are too small to share out (`training_processes`) keeps one process. The global
    batch stays `--batch-size`, split evenly over the processes, so the run is the one a single process would make (with
    dropout masks drawn per process)."""
    output_dir = Path(args.output_dir)
    with locked_output_dir(output_dir):
        # What could fail in one process and leave the others waiting for it is checked here, once.
        check_output_dir(args, output_dir)
        checkpoint_to_resume(args, output_dir)
        tokenizer = build_tokenizer(args)
        config = build_config(args, tokenizer)
        max_length = args.max_length or memory_bound_max_length(config, args.batch_size)
        dataset, names = load_data(args, tokenizer, max_length)
        check_metric_name(args, names)
        if args.num_processes is None:
            tokens_per_step = args.batch_size * np.mean([len(sequence) for sequence in dataset["train"][SEQUENCE_COLUMN]])
            processes = training_processes(processes, tokens_per_step, config.hidden_size)
        while args.batch_size % processes:
            processes -= 1
        if processes == 1:
            configure_threads(args.threads or threads_from_environment() or 1)
            return summary_line(args, train(args, lock=False))
        per_process = {"batch_size": args.batch_size // processes, "max_length": max_length, "num_processes": 1, "threads": 1}
        try:
            # One thread per process, said in the environment too (accelerate warns when OMP_NUM_THREADS is unset).
            with patch_environment(OMP_NUM_THREADS="1"):
                summaries = launch_on_cpus(train_worker, (argparse.Namespace(**{**vars(args), **per_process}),), processes)
        except WorkerError as error:
            if cli.is_expected_error(error.type_name):
                raise ValueError(error.message) from None
            raise RuntimeError(f"a training process failed:\n{error.traceback}") from None
    return summaries[0]


def cross_validate(args: argparse.Namespace) -> str | None:
    """One complete run per fold of `--fold-column` in `OUTPUT_DIR/fold_<k>/`, that fold the test split and validation
    carved from the others; then `OUTPUT_DIR/results.json` with each fold's test metrics and their mean and standard
    deviation (NumPy's, over folds). With `--resume-from-checkpoint latest`, finished folds are kept and an interrupted
    one continues from its last checkpoint."""
    output_dir = Path(args.output_dir)
    main_process = int(os.environ.get("RANK", "0")) == 0
    table = read_table(args.train_file)
    check_columns(table, [args.fold_column], f"--train-file {args.train_file}")
    folds = fold_values(table, args.fold_column)
    if args.folds is not None:
        chosen = [fold.strip() for fold in args.folds.split(",") if fold.strip()]
        if unknown := [fold for fold in chosen if fold not in folds]:
            raise ValueError(f"--folds {','.join(unknown)}: not in column {args.fold_column!r}, whose folds are {folds}.")
        folds = [fold for fold in folds if fold in chosen]
    if len(folds) < 2 and args.folds is None:
        raise ValueError(f"--fold-column {args.fold_column!r} holds one fold ({folds[0]!r}); cross-validation needs two or more.")
    if args.resume_from_checkpoint not in (None, "latest"):
        raise ValueError("--fold-column resumes with --resume-from-checkpoint latest (each fold from its own last checkpoint).")
    with locked_output_dir(output_dir) if main_process else nullcontext():
        if main_process and RunLayout(output_dir).results.exists() and not args.resume_from_checkpoint and not args.overwrite_output_dir:
            raise ValueError(
                f"--output-dir {output_dir} already holds a cross-validation ({RunLayout.RESULTS}); pass --resume-from-checkpoint "
                "latest to continue it or --overwrite-output-dir to replace it."
            )
        per_fold = {}
        for fold in folds:
            folder = RunLayout(output_dir).fold(fold)
            if args.resume_from_checkpoint and folder.results.is_file():
                per_fold[fold] = json.loads(folder.results.read_text())
                continue
            fold_args = argparse.Namespace(**{**vars(args), "output_dir": str(folder.root), "test_fold": fold})
            line = train_here_or_on_cpus(fold_args)
            if line and main_process:
                tqdm.write(f"fold {fold}: {line}")
            per_fold[fold] = json.loads(folder.results.read_text())
        if not main_process:
            return None
        # A metric undefined (null) in some fold has no mean: it is left out, and each fold's value stays in "folds".
        metrics = [key for key in per_fold[folds[0]]["test"] if all(isinstance(per_fold[fold]["test"].get(key), float) for fold in folds)]
        values = {metric: np.array([per_fold[fold]["test"][metric] for fold in folds]) for metric in metrics}
        results = {
            "fold_column": args.fold_column,
            "folds": {fold: {"test": per_fold[fold]["test"], "best_epoch": per_fold[fold]["best_epoch"]} for fold in folds},
            "test_mean": {metric: float(values[metric].mean()) for metric in metrics},
            "test_std": {metric: float(values[metric].std()) for metric in metrics},
            "metric_for_best_model": args.metric_for_best_model,
        }
        write_json(RunLayout(output_dir).results, results)
    metric = args.metric_for_best_model
    return (
        f"{len(folds)} folds of {args.fold_column}: test {metric} {format_metric(results['test_mean'].get(metric))} ± "
        f"{format_metric(results['test_std'].get(metric))}; per-fold runs and {RunLayout.RESULTS} in {output_dir}"
    )


def train_member(state: dict, args: argparse.Namespace) -> str | None:
    """One ensemble member, trained in a worker process of `train_ensemble` (single-threaded)."""
    return summary_line(args, train(args))


def train_ensemble(args: argparse.Namespace) -> str:
    """`--ensemble N`: N complete runs in `OUTPUT_DIR/member_<i>/` with seeds `seed + i` (model initialization,
    dropout, batch order) on one data split (`--data-seed`), then in `OUTPUT_DIR/best/` each member's best model as
    a `save_pretrained` subfolder, `ensemble.json` and a model card, and in `OUTPUT_DIR/results.json` the ensemble's
    validation and test metrics (its mean prediction, `Task.combine_logits`) next to each member's. On CPUs, without
    `--num-processes`, members train side by side, one single-threaded process each and as many at once as there are
    usable CPUs; otherwise one after another, each as a single run would. With `--resume-from-checkpoint latest`,
    finished members are kept and an interrupted one continues from its last checkpoint."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--ensemble trains its members in processes of its own; run it without accelerate launch or torchrun.")
    output_dir = Path(args.output_dir)
    layout = RunLayout(output_dir)
    members = [RunLayout.member_name(index) for index in range(args.ensemble)]
    member_args = {
        member: argparse.Namespace(
            **{**vars(args), "output_dir": str(output_dir / member), "seed": args.seed + index, "ensemble": None, "push_to_hub": None}
        )
        for index, member in enumerate(members)
    }
    with locked_output_dir(output_dir):
        check_output_dir(args, output_dir)
        pending = [member for member in members if not (args.resume_from_checkpoint and RunLayout(output_dir / member).results.is_file())]
        side_by_side = min(len(pending), usable_cpus()) if args.num_processes is None and not torch.accelerator.is_available() else 1
        if side_by_side > 1:
            with WorkerPool({}, side_by_side) as workers:
                quiet = [argparse.Namespace(**{**vars(member_args[member]), "quiet": True}) for member in pending]
                for member, line in zip(pending, workers.map(train_member, quiet)):
                    tqdm.write(f"{member}: {line}")
        else:
            for member in pending:
                tqdm.write(f"{member}: {train_here_or_on_cpus(member_args[member])}")
        runs = {member: json.loads(RunLayout(output_dir / member).results.read_text()) for member in members}
        tokenizer = AutoTokenizer.from_pretrained(RunLayout(output_dir / members[0]).best)
        models = [TASKS[args.task].model_class.from_pretrained(RunLayout(output_dir / member).best) for member in members]
        dataset, names = load_data(args, tokenizer, args.max_length or memory_bound_max_length(models[0].config, args.batch_size))
        results = evaluate_ensemble(args, models, tokenizer, dataset, names, runs)
        protocol = describe_protocol(args, runs[members[0]]) + (
            f" Ensemble: {len(members)} members with seeds {args.seed}-{args.seed + len(members) - 1}, each chosen this way; "
            "the ensemble predicts their mean (of class probabilities for classifiers) and their standard deviation."
        )
        card = run_card(args, models[0], tokenizer, results, dataset, protocol, ensemble_members=members)
        with atomic_directory(layout.best) as temporary:
            for member in members:
                shutil.copytree(RunLayout(output_dir / member).best, temporary / member)
            # transformers looks for a tokenizer's remote code at the repo's root even when loading a subfolder.
            for code in (temporary / members[0]).glob("*.py"):
                shutil.copy(code, temporary / code.name)
            write_json(temporary / ENSEMBLE_FILE, {"members": members, "seeds": [member_args[member].seed for member in members]})
            write_text(temporary / "README.md", str(card))
        write_json(layout.results, results)
        if args.push_to_hub:
            url = push_run(output_dir, args.push_to_hub, card, private=args.hub_private, revision=args.hub_revision)
            print(f"lyra-train: pushed to {url}", file=sys.stderr)
    metric = args.metric_for_best_model
    split = "test" if results["test"] else "validation"
    return (
        f"ensemble of {len(members)}: {split} {metric} {format_metric(results[split][metric])} (members "
        f"{format_metric(results['members_mean'][split].get(metric))} ± {format_metric(results['members_std'][split].get(metric))}); "
        f"ensemble in {layout.best}"
    )


def evaluate_ensemble(args: argparse.Namespace, models: list, tokenizer, dataset, names: list[str], runs: dict[str, dict]) -> dict:
    """The ensemble's results.json: its own validation and test metrics (the members' best `models` together, on the
    splits of `dataset`, which every member used), each member's (`runs`: their results.json), and the members' mean and
    standard deviation (NumPy's, over members)."""
    task = TASKS[args.task]
    members = list(runs)
    tokenized = tokenize_dataset(dataset, tokenizer)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    models = [accelerator.prepare_model(model, evaluation_mode=True) for model in models]
    compute_metrics = task.compute_metrics(names)
    results = {"ensemble_size": len(members), "seeds": [args.seed + index for index in range(len(members))]}
    for split in ("validation", "test"):
        if split not in tokenized:
            results[split] = None
            continue
        loader = accelerator.prepare_data_loader(
            DataLoader(sort_by_length(tokenized[split]), batch_size=args.batch_size, collate_fn=task.collator(tokenizer))
        )
        results[split] = evaluate(models, loader, accelerator, compute_metrics, task, f"ensemble {split}", not args.quiet)
    results["members"] = {
        member: {"seed": results["seeds"][index], "best_epoch": runs[member]["best_epoch"], "validation": runs[member]["validation"], "test": runs[member]["test"]}
        for index, member in enumerate(members)
    }
    for statistic, function in (("members_mean", np.mean), ("members_std", np.std)):
        results[statistic] = {
            split: {
                metric: float(function([runs[member][split][metric] for member in members]))
                for metric, value in results[split].items()
                if isinstance(value, float) and all(isinstance(runs[member][split].get(metric), float) for member in members)
            }
            for split in ("validation", "test")
            if results[split]
        }
    results["metric_for_best_model"] = args.metric_for_best_model
    results["num_parameters"] = sum(parameter.numel() for parameter in models[0].parameters())
    return results


def run(args: argparse.Namespace) -> str | None:
    """Cross-validate, train an ensemble, or train once; see `train_here_or_on_cpus`."""
    if args.fold_column:
        return cross_validate(args)
    return train_ensemble(args) if args.ensemble else train_here_or_on_cpus(args)


def train_here_or_on_cpus(args: argparse.Namespace) -> str | None:
    """Train here, or over this machine's CPUs as one process each (see `lyra_hf.cpu`), and the closing line."""
    processes, threads = plan_processes(args.num_processes, args.threads)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # by `accelerate launch` or torchrun: one process of a job
    if processes > 1 and not launched and not torch.accelerator.is_available():
        return train_on_cpus(args, processes)
    configure_threads(threads)
    return summary_line(args, train(args))


def resume_hint(argv: list[str]) -> str:
    """What to run after an interrupt: the same command, continuing from the last complete epoch."""
    drop = {"--resume-from-checkpoint": True, "--overwrite-output-dir": False}
    return "resume with: " + cli.rerun_hint("lyra-train", argv, drop, add=("--resume-from-checkpoint", "latest"))


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv, after_interrupt=resume_hint)


if __name__ == "__main__":
    sys.exit(main())
