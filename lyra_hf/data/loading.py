"""From files to batches: CSV/TSV/FASTA -> `datasets.DatasetDict` -> tokenized splits -> the right collator."""

import math
from pathlib import Path

import datasets

from ..tasks import get_task
from .checks import MIN_EVALUATION_ROWS, check_columns, check_mask_column, check_rows, check_split_sizes
from .files import LABELS_COLUMN, SEQUENCE_COLUMN, read_table
from .splits import split_by_column, split_by_fold


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
    max_length: int | None = None,
    split_column: str | None = None,
    split_names: tuple[str, str] = ("train", "test"),
    validation_column: str | None = None,
    fold_column: str | None = None,
    test_fold: str | None = None,
    ignore_label_characters: str = "",
    mask_column: str | None = None,
) -> datasets.DatasetDict:
    """Load sequence files into a `DatasetDict` with splits `train`, `validation` (carved from train with `seed` when
    no file is given) and `test` (when given), and columns `sequence` and `labels`. Instead of separate files, one
    file's columns can say where each row goes:

    - `split_column` (FLIP-style `set`): rows whose value is `split_names[0]` are train, `split_names[1]` test; with
      `validation_column` (FLIP's `validation`), train rows with a true value there (true, 1, yes) are validation;
    - `fold_column` (ProteinGym-style `fold_random_5`) with `test_fold`: the rows of that fold are test, the others
      train, with validation carved from them.

    Labels:

    - regression: `labels` is a list of floats, one per label column (one or more targets);
    - classification: one label column of class names; `labels` is a `ClassLabel` whose names (sorted) become the
      model's `id2label`;
    - token-classification: one label column of per-residue label strings (e.g. `HHEECC`); `labels` is a list of
      class ids, one per residue, with `ClassLabel` names. Residues without a label (a character of
      `ignore_label_characters`, e.g. `X` for unresolved residues, or a 0 in `mask_column`, a string of one 0/1 per
      residue) get -1, datasets' "no label"; `tokenize_dataset` turns it into -100, which the loss and the metrics skip.

    `alphabet` (the letters, e.g. `LyraTokenizer.letters`) with `unknown="error"` rejects characters outside it;
    `padding_characters` are allowed and become masked padding in the tokenizer. `max_length` rejects longer
    sequences.
    """
    task = get_task(task)
    if unknown not in ("error", "unk"):
        raise ValueError(f"`unknown` must be 'error' or 'unk', got {unknown!r}.")
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    if not label_columns:
        raise ValueError("At least one label column is needed.")
    if not task.numeric_labels and len(label_columns) != 1:
        raise ValueError(f"Task {task.name!r} takes exactly one label column, got {label_columns}.")
    if not 0.0 < validation_fraction < 1.0 and validation_file is None:
        raise ValueError(f"`validation_fraction` must be in (0, 1), got {validation_fraction}.")

    if (split_column or fold_column) and (validation_file or test_file):
        column = "split_column" if split_column else "fold_column"
        raise ValueError(f"`{column}` reads every split from one file; give no validation or test file with it.")
    if split_column and fold_column:
        raise ValueError("Give `split_column` or `fold_column`, not both.")
    if validation_column and not split_column:
        raise ValueError("`validation_column` marks validation rows among a `split_column`'s train rows; give both.")
    if (ignore_label_characters or mask_column) and not task.labels_per_residue:
        raise ValueError(f"Ignored label characters and mask columns mark residues without a label; task {task.name!r} has no per-residue labels.")
    ignored = set(ignore_label_characters)

    files = {"train": train_file, "validation": validation_file, "test": test_file}
    splits = {}
    for split, path in files.items():
        if path is None:
            continue
        dataset = read_table(path, text_columns=(mask_column,) if mask_column else ())
        where = f"{split} file {path}" if not (split_column or fold_column) else f"file {path}"
        routing = [column for column in (split_column, validation_column, fold_column, mask_column) if column]
        check_columns(dataset, [sequence_column] + label_columns + routing, where)
        check_rows(
            dataset, sequence_column, label_columns, task.name, where, alphabet if unknown == "error" else None, padding_characters, max_length
        )
        if mask_column:
            check_mask_column(dataset, sequence_column, mask_column, where)
        splits[split] = dataset
    if split_column:
        splits = split_by_column(splits["train"], split_column, split_names, validation_column, f"file {train_file}")
    elif fold_column:
        splits = split_by_fold(splits["train"], fold_column, test_fold, f"file {train_file}")

    if "validation" not in splits:
        # At least two rows (a small file's 10% can be one), taken as datasets takes the fraction: ceil(fraction x rows).
        carved_rows = max(MIN_EVALUATION_ROWS, math.ceil(validation_fraction * len(splits["train"])))
        if len(splits["train"]) < 2 * carved_rows:
            raise ValueError(f"file {train_file}: {len(splits['train'])} training rows are too few to carve a validation split from; give more rows or a validation file.")
        test_size = validation_fraction if carved_rows > MIN_EVALUATION_ROWS else carved_rows
        carved = splits["train"].train_test_split(test_size=test_size, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
    check_split_sizes(splits)

    label_names = task.label_names(splits["train"][label_columns[0]], ignored)
    if label_names is not None:
        column = label_columns[0]
        if len(label_names) < 2:
            raise ValueError(f"train split: column {column!r} holds one class ({label_names[0]!r}); a classifier needs two or more.")
        for split, dataset in splits.items():
            if unseen := set(task.label_names(dataset[column], ignored)) - set(label_names):
                raise ValueError(f"{split} split: labels {sorted(unseen)} in column {column!r} never occur in train.")

    def to_model_columns(batch):
        sequences = ["".join(sequence.split()) for sequence in batch[sequence_column]]
        if task.numeric_labels:
            labels = [[float(batch[column][row]) for column in label_columns] for row in range(len(sequences))]
        elif not task.labels_per_residue:
            labels = [label_names.index(str(value)) for value in batch[label_columns[0]]]
        else:
            strings = ["".join(str(value).split()) for value in batch[label_columns[0]]]
            masks = ["".join(str(value).split()) for value in batch[mask_column]] if mask_column else ["1" * len(text) for text in strings]
            labels = [
                [-1 if c in ignored or scored == "0" else label_names.index(c) for c, scored in zip(text, mask)] for text, mask in zip(strings, masks)
            ]
        return {SEQUENCE_COLUMN: sequences, LABELS_COLUMN: labels}

    features = datasets.Features({SEQUENCE_COLUMN: datasets.Value("string"), LABELS_COLUMN: task.label_feature(label_names)})
    return datasets.DatasetDict(
        {
            split: dataset.map(to_model_columns, batched=True, remove_columns=dataset.column_names, features=features)
            for split, dataset in splits.items()
        }
    )


def label_names(dataset: datasets.DatasetDict) -> list[str] | None:
    """Class names of a classification or token-classification `DatasetDict` (for the config's `id2label`)."""
    feature = dataset["train"].features[LABELS_COLUMN]
    feature = getattr(feature, "feature", feature)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def tokenize_dataset(dataset: datasets.DatasetDict, tokenizer, max_length: int | None = None, num_proc: int | None = None) -> datasets.DatasetDict:
    """Tokenize the `sequence` column with `Dataset.map(batched=True)` (no padding: the collator pads per batch)."""

    per_residue = isinstance(dataset["train"].features.get(LABELS_COLUMN), datasets.Sequence) and isinstance(
        dataset["train"].features[LABELS_COLUMN].feature, datasets.ClassLabel
    )

    def tokenize(batch):
        encoded = tokenizer(batch[SEQUENCE_COLUMN], truncation=max_length is not None, max_length=max_length)
        if per_residue:  # residues without a label: -1 (datasets' "no label") becomes -100, which loss and metrics skip
            encoded[LABELS_COLUMN] = [[-100 if label == -1 else label for label in labels] for labels in batch[LABELS_COLUMN]]
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=[SEQUENCE_COLUMN], num_proc=num_proc)


def collator_for(task: str, tokenizer, pad_to_multiple_of: int | None = None):
    """`DataCollatorForTokenClassification` for per-residue labels (pads labels with -100), else
    `DataCollatorWithPadding`."""
    return get_task(task).collator(tokenizer, pad_to_multiple_of)
