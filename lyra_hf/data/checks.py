"""Row and column checks: every bad row is refused with its split, row number (1-based, header excluded; the record
number in a FASTA file) and the offending value, before anything runs."""

import math
from collections import Counter

import datasets
import numpy as np

from ..tasks import get_task
from .files import _as_number


# Metrics need at least two rows (a correlation of one value is undefined).
MIN_EVALUATION_ROWS = 2
# The largest regression label: training and the baseline hold labels, and their squared errors, in 32-bit floats.
MAX_LABEL = math.sqrt(float(np.finfo(np.float32).max))


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


def check_length_read(residues: int, config, what: str) -> None:
    """Refuse a sequence of `residues` (padding characters included: each is a position) that a model's per-position
    terms cannot read as they were trained. A prior scores substitutions of one wild type, so it reads that length
    only; site effects hold weights for the first `site_effects_length` positions (the training sequences' length, or
    with `--site-effects on` the longest), and nothing beyond them. `what` names the sequence (`where: row 3`)."""
    prior = getattr(config, "prior_length", 0) or 0
    if prior and residues != prior:
        raise ValueError(
            f"{what} is {residues:,} residues long; this model's prior scores substitutions of a wild type of "
            f"{prior:,} residues, so it reads sequences of that length only."
        )
    sites = getattr(config, "site_effects_length", 0) or 0
    if sites and residues > sites:
        raise ValueError(
            f"{what} is {residues:,} residues long; this model's site effects hold weights for the first {sites:,} "
            "positions only (the training sequences' length), so it cannot read the rest."
        )


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
    model_config=None,
) -> None:
    """Raise a `ValueError` with the row number (1-based, from `first_row` for a later chunk of a file) for an empty
    sequence or one of only padding characters, a character outside `alphabet` (when given), a sequence longer than
    `max_length` or of a length `model_config`'s per-position terms cannot read (`check_length_read`), or a bad label
    (`check_label`; `task`: the labels' task, None without labels)."""
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
            raise ValueError(
                f"{where}: row {row} holds only padding characters ({compact[:20]!r}): no residue to read."
            )
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
        if model_config is not None:
            check_length_read(len(compact), model_config, f"{where}: row {row}")
        for column, values in labels.items():
            check_label(task, values[row - first_row], column, row, len(compact), where)


def check_label(task, value, column: str, row: int, residues: int, where: str) -> None:
    """A label is present; for regression a finite number whose square fits 32-bit floats; per residue, one label
    for each of the sequence's `residues`."""
    if _is_missing(value):
        raise ValueError(f"{where}: missing or NaN label in column {column!r} at row {row}.")
    if task.numeric_labels:
        number = _as_number(value)
        if number is None:
            raise ValueError(f"{where}: label {value!r} in column {column!r} at row {row} is not a number.")
        if not math.isfinite(number):
            raise ValueError(f"{where}: label {value!r} in column {column!r} at row {row} is not finite.")
        if abs(number) > MAX_LABEL:
            raise ValueError(
                f"{where}: label {value!r} in column {column!r} at row {row} is too large: its square, which the "
                f"squared error holds, overflows 32-bit floats beyond {MAX_LABEL:.1e}; rescale the column."
            )
    if task.labels_per_residue and len("".join(str(value).split())) != residues:
        raise ValueError(
            f"{where}: row {row} has {len(''.join(str(value).split()))} per-residue labels in column "
            f"{column!r} for a sequence of {residues} residues."
        )


# A file is refused when more than this share of its letters lie outside the alphabet, even with --unknown unk, which
# maps a few odd characters and would otherwise train on a sequence of [UNK]s.
MOSTLY_OUTSIDE = 0.5


def letter_counts(sequences, padding_characters: str = "") -> Counter:
    """How often each character (upper-cased; whitespace and padding characters left out) occurs in `sequences`."""
    padding = set(padding_characters.upper())
    counts = Counter("".join("".join(str(sequence).split()) for sequence in sequences).upper())
    return Counter({character: count for character, count in counts.items() if character not in padding})


def fitting_alphabets(counts: Counter) -> list[str]:
    """The named alphabets that hold every character counted, nucleotides first."""
    from ..tokenization_lyra import ALPHABETS

    names = sorted(ALPHABETS, key=lambda name: len(ALPHABETS[name]))
    return [name for name in names if set(counts) <= set(ALPHABETS[name])]


def check_alphabet_fits(sequences, letters: str, padding_characters: str, where: str) -> None:
    """Refuse sequences most of whose letters lie outside `letters`, naming the alphabet they fit."""
    counts = letter_counts(sequences, padding_characters)
    total = sum(counts.values())
    outside = sum(count for character, count in counts.items() if character not in letters.upper())
    if total and outside > MOSTLY_OUTSIDE * total:
        fits = fitting_alphabets(counts)
        hint = f"; they read like {fits[0]} (--alphabet {fits[0]})" if fits else ""
        raise ValueError(f"{where}: {outside / total:.0%} of its letters lie outside the alphabet {letters!r}{hint}.")


def alphabet_hint(sequences, letters: str, padding_characters: str = "") -> str | None:
    """A line for training sequences made only of nucleotides when the alphabet is the protein one (whose A, C, G and
    T are amino acids)."""
    from ..tokenization_lyra import ALPHABETS

    counts = letter_counts(sequences, padding_characters)
    if letters != ALPHABETS["protein"] or not counts or not set(counts) <= set("ACGTUN"):
        return None
    name = "rna" if "U" in counts else "dna"
    return (
        f"lyra-train: every training sequence is made of {', '.join(sorted(counts))} alone: if these are "
        f"nucleotides, pass --alphabet {name} (the protein alphabet reads them as amino acids)."
    )


def check_mask_column(dataset: datasets.Dataset, sequence_column: str, mask_column: str, where: str) -> None:
    """Each mask is one 0 or 1 per residue."""
    for row, (sequence, mask) in enumerate(zip(dataset[sequence_column], dataset[mask_column]), 1):
        residues, mask = len("".join(sequence.split())), "".join(str(mask).split())
        if len(mask) != residues or not set(mask) <= {"0", "1"}:
            raise ValueError(
                f"{where}: mask {mask[:40]!r} in column {mask_column!r} at row {row} must be one 0 or 1 per residue "
                f"({residues})."
            )


def check_split_sizes(splits: dict) -> None:
    """The validation and test splits, which are scored, hold at least `MIN_EVALUATION_ROWS` rows each."""
    for split in ("validation", "test"):
        if split in splits and len(splits[split]) < MIN_EVALUATION_ROWS:
            raise ValueError(
                f"{split} split: {len(splits[split])} row{'' if len(splits[split]) == 1 else 's'}; its metrics need at "
                f"least {MIN_EVALUATION_ROWS} (a correlation of one "
                "value is undefined)."
            )
