"""From files to batches: CSV/TSV/FASTA -> `datasets.DatasetDict` -> tokenized splits -> the right collator."""

import functools
import math
from pathlib import Path

import datasets
import numpy as np

from ..tasks import get_task
from .checks import (
    MIN_EVALUATION_ROWS,
    check_alphabet_fits,
    check_columns,
    check_mask_column,
    check_rows,
    check_split_sizes,
)
from .files import LABELS_COLUMN, SEQUENCE_COLUMN, read_table
from .splits import routing_problems, split_by_column, split_by_fold


def load_sequence_dataset(
    train_file: str | Path,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    sequence_column: str = SEQUENCE_COLUMN,
    label_columns: str | list[str] = "label",
    task: str = "regression",
    alphabet: str | None = None,
    padding_characters: str = "",
    unknown: str = "error",
    validation_fraction: float = 0.1,
    seed: int = 42,
    validation_part: int = 0,
    max_length: int | None = None,
    split_column: str | None = None,
    split_names: tuple[str, str] = ("train", "test"),
    validation_column: str | None = None,
    fold_column: str | None = None,
    test_fold: str | None = None,
    ignore_label_characters: str = "",
    mask_column: str | None = None,
) -> datasets.DatasetDict:
    """Load sequence files into a `DatasetDict` with splits `train`, `validation` (carved from train with `seed`, slice
    `validation_part`, when no file or column gives it; `carve_validation`) and `test` (when given), and columns
    `sequence` and `labels`. One file's columns may route the rows instead: `split_column` with `split_names` (FLIP's
    `set`) and `validation_column` (FLIP's `validation`), or `fold_column` with `test_fold` (ProteinGym's folds).
    Labels, residues without one (`ignore_label_characters`, `mask_column`), the checks of `alphabet`, `unknown` and
    `max_length`, and `padding_characters`: docs/data.md."""
    task = get_task(task)
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    marks = (ignore_label_characters, mask_column)
    check_arguments(
        task, label_columns, unknown, validation_fraction, files, (split_column, fold_column, validation_column), marks
    )
    letters = alphabet if unknown == "error" else None
    read = functools.partial(
        read_checked, sequence_column=sequence_column, label_columns=label_columns, mask_column=mask_column
    )
    read = functools.partial(
        read, task=task, letters=letters, padding_characters=padding_characters, max_length=max_length
    )
    splits = read_splits(read, files, split_column, split_names, validation_column, fold_column, test_fold, mask_column)
    for split, rows in splits.items() if alphabet is not None else ():
        where = f"{split} split ({files[split] or train_file})"
        check_alphabet_fits(rows[sequence_column], alphabet, padding_characters, where)
    if "validation" not in splits:
        carved = carve_validation(
            splits["train"], validation_fraction, seed, train_file, validation_part, sequence_column
        )
        splits["train"], splits["validation"] = carved
    check_split_sizes(splits)
    return model_columns(task, splits, sequence_column, label_columns, mask_column, set(ignore_label_characters))


def model_columns(task, splits: dict, sequence_column: str, label_columns: list[str], mask_column, ignored: set[str]):
    """The splits as a `DatasetDict` of the columns the model reads: `sequence`, and `labels` (floats for regression,
    `ClassLabel` ids for classes, a list of ids per residue, -1 where a residue has none)."""
    names = class_names(task, splits, label_columns[0], ignored)
    convert = ModelColumns(task, sequence_column, label_columns, mask_column, names, ignored)
    features = datasets.Features({SEQUENCE_COLUMN: datasets.Value("string"), LABELS_COLUMN: task.label_feature(names)})
    mapped = {
        split: rows.map(convert, batched=True, remove_columns=rows.column_names, features=features)
        for split, rows in splits.items()
    }
    return datasets.DatasetDict(mapped)


def read_splits(
    read, files: dict, split_column, split_names, validation_column, fold_column, test_fold, mask_column
) -> dict[str, datasets.Dataset]:
    """The splits of the given files, or of the train file's rows by its split or fold column; `read` is `read_checked`
    with the run's checks."""
    if not (split_column or fold_column):
        return {
            split: read(path, f"{split} file {path}", routing=[mask_column] if mask_column else [])
            for split, path in files.items()
            if path is not None
        }
    where = f"file {files['train']}"
    rows = read(
        files["train"],
        where,
        routing=[column for column in (split_column, validation_column, fold_column, mask_column) if column],
    )
    if split_column:
        return split_by_column(rows, split_column, split_names, validation_column, where)
    return split_by_fold(rows, fold_column, test_fold, where)


def check_arguments(
    task, label_columns, unknown, validation_fraction, files: dict, routing: tuple, marks: tuple
) -> None:
    """`load_sequence_dataset`'s arguments, checked before any file is read: `files` by split, `routing` the split,
    fold and validation columns, `marks` the ignored label characters and the mask column."""
    ignore_label_characters, mask_column = marks
    marked = "`ignore_label_characters`" if ignore_label_characters else "`mask_column`" if mask_column else None
    routes = dict(zip(("split_column", "fold_column", "validation_column"), routing))
    problems = routing_problems(
        lambda name: f"`{name}`",
        split_files=bool(files["validation"] or files["test"]),
        residue_marks=marked,
        labels_per_residue=task.labels_per_residue,
        **routes,
    )
    fraction = validation_fraction if files["validation"] is None else None
    problems += argument_problems(task, label_columns, unknown, fraction)
    if problems:
        raise ValueError(f"{problems[0][0].upper()}{problems[0][1:]}.")


def argument_problems(task, label_columns: list[str], unknown: str, validation_fraction: float | None) -> list[str]:
    problems = []
    if unknown not in ("error", "unk"):
        problems.append(f"`unknown` must be 'error' or 'unk', got {unknown!r}")
    if not label_columns:
        problems.append("at least one label column is needed")
    if not task.numeric_labels and len(label_columns) != 1:
        problems.append(f"task {task.name!r} takes exactly one label column, got {label_columns}")
    if validation_fraction is not None and not 0.0 < validation_fraction < 1.0:
        problems.append(f"`validation_fraction` must be in (0, 1), got {validation_fraction}")
    return problems


def read_checked(
    path,
    where: str,
    *,
    routing: list[str],
    sequence_column: str,
    label_columns: list[str],
    mask_column,
    task,
    letters,
    padding_characters: str,
    max_length,
):
    """One file's rows, its columns and every row checked (`check_rows`), naming `where` in any error."""
    # Per-residue labels and masks are strings of digits (FLIP's conservation: "6666577..."), which read as numbers
    # would lose their leading zeros or overflow.
    text_columns = (
        sequence_column,
        *(label_columns if task.labels_per_residue else ()),
        *([mask_column] if mask_column else []),
    )
    dataset = read_table(path, text_columns=text_columns)
    check_columns(dataset, [sequence_column] + label_columns + routing, where)
    check_rows(dataset, sequence_column, label_columns, task.name, where, letters, padding_characters, max_length)
    if mask_column:
        check_mask_column(dataset, sequence_column, mask_column, where)
    return dataset


def carve_validation(
    train: datasets.Dataset,
    fraction: float,
    seed: int,
    train_file,
    part: int = 0,
    sequence_column: str = SEQUENCE_COLUMN,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """A seeded validation split carved from train: at least two rows (a small file's 10% can be one), about
    ceil(fraction
    x rows) as datasets' `train_test_split` takes them. Rows of one sequence (duplicates) go to the same side, so that
    validation never scores a sequence training saw: the shuffle is of the distinct sequences (with no duplicates,
    exactly `train_test_split`'s), and a sequence is carved when its first row falls in the slice. `part` k carves the
    k-th such slice of the same seeded shuffle instead of the first, so that different parts never share a row;
    parts beyond the last whole slice wrap around."""
    carved_rows = max(MIN_EVALUATION_ROWS, math.ceil(fraction * len(train)))
    if len(train) < 2 * carved_rows:
        raise ValueError(
            f"file {train_file}: {len(train)} training rows are too few to carve a validation split from; give more "
            "rows or a validation file."
        )
    groups = sequence_groups(train[sequence_column])
    shuffled = [groups[index] for index in np.random.default_rng(seed).permutation(len(groups))]
    starts = np.cumsum([0] + [len(group) for group in shuffled[:-1]])
    first = part % (len(train) // carved_rows) * carved_rows
    carved = [
        index for start, group in zip(starts, shuffled) if first <= start < first + carved_rows for index in group
    ]
    kept = [
        index for start, group in zip(starts, shuffled) if not first <= start < first + carved_rows for index in group
    ]
    return train.select(kept), train.select(carved)


def sequence_groups(sequences: list[str]) -> list[list[int]]:
    """The rows of each distinct sequence (whitespace removed, case ignored), in the order of their first rows."""
    groups: dict[str, list[int]] = {}
    for row, sequence in enumerate(sequences):
        groups.setdefault("".join(str(sequence).split()).upper(), []).append(row)
    return list(groups.values())


def class_names(task, splits: dict[str, datasets.Dataset], column: str, ignored: set[str]) -> list[str] | None:
    """The classes of train (None for numeric labels), checked: two or more, and every other split's among them."""
    names = task.label_names(splits["train"][column], ignored)
    if names is None:
        return None
    if len(names) < 2:
        raise ValueError(
            f"train split: column {column!r} holds one class ({names[0]!r}); a classifier needs two or more."
        )
    for split, dataset in splits.items():
        if unseen := set(task.label_names(dataset[column], ignored)) - set(names):
            raise ValueError(f"{split} split: labels {sorted(unseen)} in column {column!r} never occur in train.")
    return names


class ModelColumns:
    """A batched `datasets.map` function from a file's columns to `sequence` (whitespace removed) and `labels`: floats
    per target, a class id, or one class id per residue (-1 where the residue has no label)."""

    def __init__(
        self,
        task,
        sequence_column: str,
        label_columns: list[str],
        mask_column: str | None,
        names: list[str] | None,
        ignored: set[str],
    ):
        self.task, self.sequence_column, self.label_columns, self.mask_column = (
            task,
            sequence_column,
            label_columns,
            mask_column,
        )
        self.names, self.ignored = names, ignored

    def __call__(self, batch):
        sequences = ["".join(sequence.split()) for sequence in batch[self.sequence_column]]
        if self.task.numeric_labels:
            labels = [[float(batch[column][row]) for column in self.label_columns] for row in range(len(sequences))]
        elif not self.task.labels_per_residue:
            labels = [self.names.index(str(value)) for value in batch[self.label_columns[0]]]
        else:
            strings = ["".join(str(value).split()) for value in batch[self.label_columns[0]]]
            masks = (
                ["".join(str(value).split()) for value in batch[self.mask_column]]
                if self.mask_column
                else ["1" * len(text) for text in strings]
            )
            labels = [
                [-1 if c in self.ignored or scored == "0" else self.names.index(c) for c, scored in zip(text, mask)]
                for text, mask in zip(strings, masks)
            ]
        return {SEQUENCE_COLUMN: sequences, LABELS_COLUMN: labels}


def label_names(dataset: datasets.DatasetDict) -> list[str] | None:
    """Class names of a classification or token-classification `DatasetDict` (for the config's `id2label`)."""
    feature = dataset["train"].features[LABELS_COLUMN]
    feature = getattr(feature, "feature", feature)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def tokenize_dataset(
    dataset: datasets.DatasetDict, tokenizer, max_length: int | None = None, num_proc: int | None = None
) -> datasets.DatasetDict:
    """Tokenize the `sequence` column of every split given with `Dataset.map(batched=True)` (no padding: the collator
    pads per batch). The splits share their features, so any one says whether labels are per residue."""
    features = next(iter(dataset.values())).features
    per_residue = isinstance(features.get(LABELS_COLUMN), datasets.Sequence) and isinstance(
        features[LABELS_COLUMN].feature, datasets.ClassLabel
    )

    def tokenize(batch):
        encoded = tokenizer(batch[SEQUENCE_COLUMN], truncation=max_length is not None, max_length=max_length)
        if per_residue:  # residues without a label: -1 (datasets' "no label") becomes -100, which loss and metrics skip
            encoded[LABELS_COLUMN] = [
                [-100 if label == -1 else label for label in labels] for labels in batch[LABELS_COLUMN]
            ]
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=[SEQUENCE_COLUMN], num_proc=num_proc)


def collator_for(task: str, tokenizer, pad_to_multiple_of: int | None = None):
    """`DataCollatorForTokenClassification` for per-residue labels (pads labels with -100), else
    `DataCollatorWithPadding`."""
    return get_task(task).collator(tokenizer, pad_to_multiple_of)
