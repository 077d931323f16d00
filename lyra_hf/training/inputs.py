"""A run's data: the splits it reads (files or the synthetic landscape), the checks only training needs, and the
tokenized splits as batches."""

import os

import numpy as np
from torch.utils.data import DataLoader

from ..data import (
    LABELS_COLUMN,
    SEQUENCE_COLUMN,
    label_names,
    load_sequence_dataset,
    synthetic_fitness_dataset,
    tokenize_dataset,
)
from ..data.loading import sequence_groups
from ..metrics import metric_of
from ..prior.table import prior_for_splits
from ..tasks import TASKS
from .options import TrainOptions


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


def load_data(options: TrainOptions, tokenizer, max_length: int):
    """The splits (`train`, `validation`, optionally `test`) and the target or class names."""
    if options.train_file is None:
        dataset, names = synthetic_fitness_dataset(seed=options.data_seed), ["fitness"]
    else:
        dataset, names = load_files(options, tokenizer, max_length)
    limits = {
        "train": options.max_train_samples,
        "validation": options.max_eval_samples,
        "test": options.max_eval_samples,
    }
    for split, limit in limits.items():
        if split in dataset and limit is not None:
            dataset[split] = dataset[split].select(range(min(limit, len(dataset[split]))))
    if TASKS[options.task].numeric_labels:
        check_labels_vary(dataset, names, options.metric_for_best_model)
    return dataset, names


def load_files(options: TrainOptions, tokenizer, max_length: int):
    dataset = load_sequence_dataset(
        options.train_file,
        validation_file=options.validation_file,
        test_file=options.test_file,
        sequence_column=options.sequence_column,
        label_columns=options.label_columns,
        task=options.task,
        alphabet=tokenizer.letters,
        padding_characters=tokenizer.padding_characters,
        unknown=options.unknown,
        seed=options.data_seed,
        validation_part=options.validation_part,
        max_length=max_length,
        split_column=options.split_column,
        split_names=tuple(options.split_values),
        validation_column=options.validation_column,
        fold_column=options.fold_column,
        test_fold=options.test_fold,
        ignore_label_characters=options.ignore_label_characters,
        mask_column=options.label_mask_column,
    )
    return dataset, (options.label_columns if TASKS[options.task].numeric_labels else label_names(dataset))


def duplicates_note(dataset) -> str | None:
    """A line saying how many sequences the training and validation rows hold more than once, and what was done."""
    sequences = [
        sequence
        for split in ("train", "validation")
        if split in dataset
        for sequence in dataset[split][SEQUENCE_COLUMN]
    ]
    repeated = [group for group in sequence_groups(sequences) if len(group) > 1]
    if not repeated:
        return None
    return (
        f"lyra-train: {len(repeated):,} sequences occur more than once ({sum(map(len, repeated)):,} rows); a carved "
        "validation split keeps each one's rows on one side, so that validation never scores a sequence training saw."
    )


def load_prior(options: TrainOptions, dataset, tokenizer):
    """`--prior` laid over the run's sequences, and each split's prior scores (`lyra_hf.prior.table.prior_for_splits`);
    (None, None) without one."""
    if not options.prior:
        return None, None
    return prior_for_splits(options.prior, options.prior_missing, dataset, tokenizer.letters)


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
                    f"{value}, so --metric-for-best-model {metric} is undefined there (a correlation with a constant "
                    "has no value); give a validation split whose labels vary, or --metric-for-best-model mse."
                )


def check_metric_name(options: TrainOptions, names: list[str]) -> None:
    available = TASKS[options.task].metric_keys(names)
    if options.metric_for_best_model not in available:
        raise ValueError(
            f"--metric-for-best-model {options.metric_for_best_model!r} is not among the validation metrics "
            f"{available}."
        )


def length_order(dataset) -> np.ndarray:
    """The rows of a tokenized dataset by length, shortest first, ties in their order (a stable sort)."""
    return np.argsort([len(ids) for ids in dataset["input_ids"]], kind="stable")


def sort_by_length(dataset):
    return dataset.select(length_order(dataset))


def tokenized_splits(dataset, tokenizer):
    """The splits tokenized; all but train sorted by length (evaluation order is free, and batches of similar length
    waste little on padding); and for those, the order they were sorted in (row i of a sorted split is row `order[i]`
    of `dataset`'s)."""
    tokenized, orders = tokenize_dataset(dataset, tokenizer), {}
    for split in tokenized:
        if split != "train":
            orders[split] = length_order(tokenized[split])
            tokenized[split] = tokenized[split].select(orders[split])
    return tokenized, orders


def build_loaders(tokenized, batch_size: int, options: TrainOptions, tokenizer) -> dict[str, DataLoader]:
    """One DataLoader per split of `tokenized`, train's shuffled."""
    collator = TASKS[options.task].collator(tokenizer)
    return {
        split: DataLoader(
            rows, batch_size=batch_size, shuffle=split == "train", collate_fn=collator, num_workers=options.num_workers
        )
        for split, rows in tokenized.items()
    }
