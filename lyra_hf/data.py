"""From files to batches: CSV/TSV/FASTA -> `datasets.DatasetDict` -> tokenized splits -> the right collator.

Strict where the tokenizer is lenient: an empty or undecodable file, a table with no rows, a sequence with a character
outside the alphabet, an empty sequence or one of only padding characters, a sequence over the length limit, a
missing, NaN or infinite label, or a per-residue label string of the wrong length is rejected with its split, row
number (1-based, header excluded; the record number in a FASTA file) and the offending value, before anything runs.
"""

import codecs
import csv
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np

from .tasks import get_task


FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fna", ".fas")
# Formats people hand over that are none of CSV, TSV or FASTA: refused by name rather than parsed as CSV.
OTHER_FORMATS = {".json": "JSON", ".jsonl": "JSON Lines", ".ndjson": "JSON Lines", ".parquet": "Parquet", ".xlsx": "Excel", ".xls": "Excel"}
# A genome segment or a long protein in one CSV field outgrows the csv module's default limit of 131,072 characters;
# lyra-train's reader (pandas, through datasets) has none, and lyra-predict must read every file lyra-train reads.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
# Metrics need at least two rows (a correlation of one value is undefined).
MIN_EVALUATION_ROWS = 2
SEQUENCE_COLUMN = "sequence"
LABELS_COLUMN = "labels"


def iter_fasta(path: str | Path, parse_numbers: bool = True) -> Iterator[dict]:
    """The records of a FASTA file one at a time: `id`, `sequence` and one entry per `key=value` in the header (numbers
    where they parse as numbers, unless `parse_numbers` is False), e.g. `>P12345 label=0.73 split=train`. Sequence
    lines are joined without whitespace."""
    header, lines = None, []

    def record() -> dict:
        fields = header.split()
        entry = {"id": fields[0] if fields else ""}
        for field in fields[1:]:
            if "=" in field:
                key, value = field.split("=", 1)
                entry[key] = _as_number(value) if parse_numbers and _as_number(value) is not None else value
        entry[SEQUENCE_COLUMN] = "".join(lines)
        return entry

    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.strip()
            if line.startswith(">"):
                if header is not None:
                    yield record()
                header, lines = line[1:], []
            elif line:
                if header is None:
                    raise ValueError(f"{path}: line {line_number} holds sequence data before any '>' header.")
                lines.append("".join(line.split()))
    if header is None:
        raise ValueError(f"{path}: no FASTA records found.")
    yield record()


def fasta_columns(keys) -> list[str]:
    """`id` first, then the header fields by name, then `sequence`."""
    return sorted(set(keys), key=lambda key: (key != "id", key == SEQUENCE_COLUMN, key))


def read_fasta(path: str | Path) -> datasets.Dataset:
    """Read a FASTA file (see `iter_fasta`) into columns `id`, the header fields and `sequence`."""
    records = list(iter_fasta(path))
    columns = fasta_columns(key for entry in records for key in entry)
    return datasets.Dataset.from_dict({key: [entry.get(key) for entry in records] for key in columns})


def stream_table(path: str | Path, chunk_rows: int = 10_000) -> tuple[list[str], Iterator[dict[str, list[str]]]]:
    """The column names of a CSV, TSV or FASTA file and an iterator over its rows in chunks of `chunk_rows` (a dict of
    columns of strings, as written in the file), reading the file once more per pass rather than holding it whole."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such data file: {path}")
    check_text_file(path)
    if path.suffix.lower() in FASTA_SUFFIXES:
        columns = fasta_columns(key for entry in iter_fasta(path, parse_numbers=False) for key in entry)
        rows = ([str(entry.get(column, "")) for column in columns] for entry in iter_fasta(path, parse_numbers=False))
    else:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            columns = next(csv.reader(handle, delimiter=_delimiter(path)))
        rows = _csv_rows(path, len(columns))

    def chunks():
        chunk = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == chunk_rows:
                yield dict(zip(columns, map(list, zip(*chunk))))
                chunk = []
        if chunk:
            yield dict(zip(columns, map(list, zip(*chunk))))

    return columns, chunks()


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _csv_rows(path: Path, width: int) -> Iterator[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=_delimiter(path))
        next(reader)
        for row_number, row in enumerate((row for row in reader if row), 1):  # not blank lines
            if len(row) != width:
                raise ValueError(f"{path}: row {row_number} has {len(row)} fields; the header has {width}.")
            yield row


def check_text_file(path: Path) -> None:
    """Refuse an empty file, bytes that are not UTF-8 text (a binary or compressed file) and a file whose only non-blank
    line is a header, each naming the file, before a parser fails on them less clearly."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size, head = 0, ""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}: byte {size + error.start:,} ({chunk[error.start]:#04x}) is not UTF-8 text; a CSV, TSV or "
                    "FASTA file is expected (decompress it first if it is compressed)."
                ) from None
            if len([line for line in head.splitlines() if line.strip()]) < 2:
                head += text
            size += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the file ends inside a multi-byte character; it is truncated or not UTF-8 text.") from None
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes).")
    lines = [line for line in head.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} holds only whitespace.")
    if path.suffix.lower() in OTHER_FORMATS or lines[0].lstrip().startswith(("{", "[")):
        kind = OTHER_FORMATS.get(path.suffix.lower(), "JSON")
        raise ValueError(f"{path} is {kind}, not CSV, TSV or FASTA; write it as a CSV file with a header row (e.g. pandas' to_csv).")
    if len(lines) == 1 and path.suffix.lower() not in FASTA_SUFFIXES:
        raise ValueError(f"{path} has a header ({lines[0].strip()[:80]!r}) but no rows.")


def read_table(path: str | Path, fasta: bool | None = None, text_columns: tuple[str, ...] = ()) -> datasets.Dataset:
    """Read a CSV, TSV or FASTA file into a `datasets.Dataset`; FASTA by the file's suffix unless `fasta` says.
    `text_columns` of a CSV or TSV stay text even where they look numeric (a per-residue mask such as 0011)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such data file: {path}")
    check_text_file(path)
    suffix = path.suffix.lower()
    if fasta or (fasta is None and suffix in FASTA_SUFFIXES):
        return read_fasta(path)
    # Sequences must stay strings even where a column looks numeric (e.g. a DNA column of only "1"s would not).
    return datasets.load_dataset(
        "csv",
        data_files=str(path),
        delimiter=_delimiter(path),
        split="train",
        keep_default_na=False,
        na_values=[""],
        encoding="utf-8-sig",  # spreadsheet exports start with a byte-order mark
        converters={column: str for column in text_columns} or None,
    )


def check_columns(dataset: datasets.Dataset | list[str], columns: list[str], where: str) -> None:
    """Raise a `ValueError` naming the missing columns and listing the available ones (of a dataset, or given)."""
    available = list(getattr(dataset, "column_names", dataset))
    missing = [column for column in columns if column not in available]
    if missing:
        raise ValueError(f"{where}: no column {', '.join(map(repr, missing))}; available columns: {available}.")


def _is_missing(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("", "nan", "na", "none", "null")
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_rows(
    dataset: datasets.Dataset,
    sequence_column: str,
    label_columns: list[str],
    task: str | None,
    where: str,
    alphabet: str | None,
    padding_characters: str,
    max_length: int | None = None,
    first_row: int = 1,
) -> None:
    """Raise a `ValueError` with the row number (1-based, from `first_row` for a later chunk of a file) for an empty sequence or one of only padding characters, a
    character outside `alphabet` (when given), a sequence longer than `max_length`, a missing, NaN or (for regression)
    non-numeric or infinite label, or per-residue labels of the wrong length (`task`: the labels' task; None without
    labels)."""
    task = get_task(task) if label_columns else None
    padding = set(padding_characters.upper() + padding_characters.lower())
    allowed = None
    if alphabet is not None:
        allowed = set(alphabet.upper()) | set(alphabet.lower()) | padding
    sequences = dataset[sequence_column]
    labels = {column: dataset[column] for column in label_columns}
    for row, sequence in enumerate(sequences, first_row):
        compact = "".join(sequence.split()) if isinstance(sequence, str) else ""
        if not compact:
            raise ValueError(f"{where}: empty sequence in column {sequence_column!r} at row {row}.")
        if padding and set(compact) <= padding:
            raise ValueError(f"{where}: row {row} holds only padding characters ({compact[:20]!r}): no residue to read.")
        if allowed is not None and not set(compact) <= allowed:
            for position, character in enumerate(compact, 1):
                if character not in allowed:
                    raise ValueError(
                        f"{where}: row {row} has character {character!r} at position {position}, outside the alphabet "
                        f"{alphabet!r}; to map such characters to [UNK], pass --unknown unk (unknown='unk' in Python)."
                    )
        if max_length is not None and len(compact) > max_length:
            raise ValueError(
                f"{where}: row {row} is {len(compact):,} residues long, over the length limit of {max_length:,}; raise "
                "it with --max-length (memory grows with batch size times length)."
            )
        for column, values in labels.items():
            value = values[row - first_row]
            if _is_missing(value):
                raise ValueError(f"{where}: missing or NaN label in column {column!r} at row {row}.")
            if task.numeric_labels:
                number = _as_number(value)
                if number is None:
                    raise ValueError(f"{where}: label {value!r} in column {column!r} at row {row} is not a number.")
                if not math.isfinite(number):
                    raise ValueError(f"{where}: label {value!r} in column {column!r} at row {row} is not finite.")
            if task.labels_per_residue and len("".join(str(value).split())) != len(compact):
                raise ValueError(
                    f"{where}: row {row} has {len(''.join(str(value).split()))} per-residue labels in column "
                    f"{column!r} for a sequence of {len(compact)} residues."
                )


TRUE_VALUES = ("true", "1", "yes", "y", "t")
FALSE_VALUES = ("false", "0", "no", "n", "f", "", "nan", "none")


def _is_true(value, column: str, row: int, where: str) -> bool:
    """A yes/no cell as the CSV reader gives it: a bool, a number (0 or NaN false), or text such as True, yes, 1."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        return not math.isnan(value) and value != 0
    text = str(value).strip().lower()
    if text not in TRUE_VALUES + FALSE_VALUES:
        raise ValueError(f"{where}: {value!r} in column {column!r} at row {row} is neither true nor false.")
    return text in TRUE_VALUES


def split_by_column(
    dataset: datasets.Dataset, split_column: str, split_names: tuple[str, str], validation_column: str | None, where: str
) -> dict[str, datasets.Dataset]:
    """Train and test rows by the value of `split_column`, and validation rows by a true `validation_column` among the
    train rows; any other value is refused, naming it and its row."""
    train_name, test_name = split_names
    rows = {"train": [], "validation": [], "test": []}
    validation = dataset[validation_column] if validation_column else None
    for row, value in enumerate(dataset[split_column]):
        name = str(value).strip()
        if name == test_name:
            rows["test"].append(row)
        elif name == train_name:
            rows["validation" if validation is not None and _is_true(validation[row], validation_column, row + 1, where) else "train"].append(row)
        else:
            raise ValueError(f"{where}: {value!r} in column {split_column!r} at row {row + 1} is neither {train_name!r} nor {test_name!r}.")
    for split, name in (("train", train_name), ("test", test_name)):
        if not rows[split]:
            raise ValueError(f"{where}: no row has {name!r} in column {split_column!r}.")
    if validation_column and not rows["validation"]:
        raise ValueError(f"{where}: no {train_name!r} row is marked true in column {validation_column!r}.")
    # Without a validation column, validation is carved from train as for a train file alone.
    return {split: dataset.select(indices) for split, indices in rows.items() if indices}


def fold_values(dataset: datasets.Dataset, fold_column: str) -> list[str]:
    """The folds of `fold_column`, as strings, in numeric order where they are numbers."""
    values = {str(value).strip() for value in dataset[fold_column]}
    return sorted(values, key=lambda value: (_as_number(value) is None, _as_number(value) or 0, value))


def split_by_fold(dataset: datasets.Dataset, fold_column: str, test_fold: str | None, where: str) -> dict[str, datasets.Dataset]:
    """The rows of fold `test_fold` as test and all others as train (validation is carved from them after)."""
    folds = fold_values(dataset, fold_column)
    if test_fold is None or str(test_fold) not in folds:
        raise ValueError(f"{where}: fold {test_fold!r} is not in column {fold_column!r}, whose folds are {folds}.")
    in_fold = [str(value).strip() == str(test_fold) for value in dataset[fold_column]]
    if all(in_fold):
        raise ValueError(f"{where}: every row is in fold {test_fold!r} of column {fold_column!r}; nothing is left to train on.")
    return {
        "train": dataset.select([row for row, flag in enumerate(in_fold) if not flag]),
        "test": dataset.select([row for row, flag in enumerate(in_fold) if flag]),
    }


def check_mask_column(dataset: datasets.Dataset, sequence_column: str, mask_column: str, where: str) -> None:
    """Each mask is one 0 or 1 per residue."""
    for row, (sequence, mask) in enumerate(zip(dataset[sequence_column], dataset[mask_column]), 1):
        residues, mask = len("".join(sequence.split())), "".join(str(mask).split())
        if len(mask) != residues or not set(mask) <= {"0", "1"}:
            raise ValueError(f"{where}: mask {mask[:40]!r} in column {mask_column!r} at row {row} must be one 0 or 1 per residue ({residues}).")


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


def check_split_sizes(splits: dict) -> None:
    """The validation and test splits, which are scored, hold at least `MIN_EVALUATION_ROWS` rows each."""
    for split in ("validation", "test"):
        if split in splits and len(splits[split]) < MIN_EVALUATION_ROWS:
            raise ValueError(
                f"{split} split: {len(splits[split])} row{'' if len(splits[split]) == 1 else 's'}; its metrics need at least {MIN_EVALUATION_ROWS} (a correlation of one "
                "value is undefined)."
            )


def synthetic_wild_type(length: int = 30, seed: int = 0) -> str:
    """The wild type of `synthetic_fitness_dataset(length=length, seed=seed)` (its first random draw), e.g. to scan
    the model `lyra-train` trains on it: `synthetic_wild_type(seed=42)` for the default run."""
    canonical = "ACDEFGHIKLMNPQRSTVWY"
    return "".join(canonical[index] for index in np.random.default_rng(seed).integers(len(canonical), size=length))


def synthetic_fitness_dataset(
    num_train: int = 6000,
    num_validation: int = 500,
    num_test: int = 1000,
    length: int = 30,
    seed: int = 0,
) -> datasets.DatasetDict:
    """A seeded, synthetic epistatic fitness landscape around a random protein wild type (regression, target
    `fitness`): each variant carries 1 + Poisson(2) substitutions and its fitness is the sum of additive effects per
    substitution, pairwise terms for 3 * length interacting position pairs (a term per letter pair) and third-order terms
    for length // 2 triples of positions (one per triple, when all three are mutated), plus small noise. This is the
    multilinear polynomial over positions that motivates Lyra; `lyra-train` trains on it when given no data files."""
    canonical = "ACDEFGHIKLMNPQRSTVWY"
    rng = np.random.default_rng(seed)
    wild_type = rng.integers(len(canonical), size=length)
    additive = rng.normal(0.0, 1.0, (length, len(canonical)))
    additive[np.arange(length), wild_type] = 0.0
    pairs = np.array([rng.choice(length, 2, replace=False) for _ in range(3 * length)])
    pair_terms = rng.normal(0.0, 0.5, (len(pairs), len(canonical), len(canonical)))
    triples = np.array([rng.choice(length, 3, replace=False) for _ in range(length // 2)])
    triple_terms = rng.normal(0.0, 1.0, len(triples))

    total = num_train + num_validation + num_test
    variants, seen = [], {tuple(wild_type)}
    while len(variants) < total:
        variant = wild_type.copy()
        positions = rng.choice(length, min(length, 1 + rng.poisson(2.0)), replace=False)
        variant[positions] = (wild_type[positions] + rng.integers(1, len(canonical), size=len(positions))) % len(canonical)
        if tuple(variant) not in seen:
            seen.add(tuple(variant))
            variants.append(variant)
    variants = np.stack(variants)
    mutated = variants != wild_type
    fitness = np.where(mutated, additive[np.arange(length), variants], 0.0).sum(1)
    both = mutated[:, pairs[:, 0]] & mutated[:, pairs[:, 1]]
    fitness += (both * pair_terms[np.arange(len(pairs)), variants[:, pairs[:, 0]], variants[:, pairs[:, 1]]]).sum(1)
    fitness += (mutated[:, triples].all(-1) * triple_terms).sum(1)
    fitness += rng.normal(0.0, 0.1, total)

    letters = np.array(list(canonical))
    sequences = ["".join(letters[variant]) for variant in variants]
    features = datasets.Features(
        {SEQUENCE_COLUMN: datasets.Value("string"), LABELS_COLUMN: datasets.Sequence(datasets.Value("float32"))}
    )
    bounds = {"train": (0, num_train), "validation": (num_train, num_train + num_validation), "test": (num_train + num_validation, total)}
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {SEQUENCE_COLUMN: sequences[start:end], LABELS_COLUMN: [[float(value)] for value in fitness[start:end]]},
                features=features,
            )
            for split, (start, end) in bounds.items()
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


__all__ = [
    "check_text_file",
    "iter_fasta",
    "read_fasta",
    "stream_table",
    "read_table",
    "check_columns",
    "check_rows",
    "load_sequence_dataset",
    "synthetic_fitness_dataset",
    "label_names",
    "tokenize_dataset",
    "collator_for",
]
