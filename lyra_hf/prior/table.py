"""A zero-shot prior as a table: one score per position and letter, relative to the wild type (0 at its letters, NaN
where the prior has none). Read from ProteinGym's per-variant layout (`mutant,score`, with `A14D` for one substitution
and `A14D:G20K` for several) or from a per-position table (`position,wild_type,letter,score`, what `lyra-prior`
writes), checked against the sequences it is used on, and turned into a model's `LyraPrior` table."""

import math
import re
from dataclasses import dataclass

import numpy as np

from ..data import read_table


# One substitution of a ProteinGym `mutant` field: the wild type's letter, the 1-based position, the new letter.
SUBSTITUTION = re.compile(r"^([A-Za-z])(\d+)([A-Za-z])$")
VARIANT_COLUMNS = ("mutant", "score")
TABLE_COLUMNS = ("position", "wild_type", "letter", "score")


@dataclass
class PriorTable:
    """`scores[p, i]`: the prior's score of letter `letters[i]` at position p + 1, relative to `wild_type[p]`; 0 at
    the wild type's letters and NaN where the prior gives no score. `wild_type` holds "-" at positions the prior names
    no wild-type letter for."""

    wild_type: str
    letters: str
    scores: np.ndarray
    source: str

    def score(self, position: int, letter: str) -> float:
        return float(self.scores[position, self.letters.index(letter)])

    def variant_scores(self, sequences: list[str], where: str) -> np.ndarray:
        """Each sequence's prior score, the sum of its substitutions' (0 for the wild type); a substitution without a
        score is refused, naming it and `where` it was found."""
        index = {letter: column for column, letter in enumerate(self.letters)}
        totals = np.zeros(len(sequences))
        for row, sequence in enumerate(sequences):
            for position, (letter, wild) in enumerate(zip(sequence.upper(), self.wild_type)):
                if letter != wild and letter in index:
                    totals[row] += self.scores[position, index[letter]]
            if math.isnan(totals[row]):
                missing = next(
                    f"{wild}{position + 1}{letter}"
                    for position, (letter, wild) in enumerate(zip(sequence.upper(), self.wild_type))
                    if letter in index and math.isnan(self.scores[position, index[letter]])
                )
                raise ValueError(
                    f"{where} holds {missing}, which the prior {self.source} has no score for; give --prior-missing a "
                    "value for such substitutions."
                )
        return totals


def read_prior(path: str, letters: str) -> PriorTable:
    """A prior file of either layout (see the module's docstring), for a model of `letters`; refused in one line, naming
    the file and the row, when a mutant does not parse, a position is not a whole number of at least 1, a score is
    missing or not finite, a letter is outside `letters`, or two rows disagree on a wild-type letter."""
    table = read_table(path)
    columns = [column.strip().lower() for column in table.column_names]
    if all(column in columns for column in TABLE_COLUMNS):
        rows = [
            (row["position"], row["wild_type"], row["letter"], row["score"])
            for row in table.rename_columns(dict(zip(table.column_names, columns)))
        ]
        entries = [
            (parse_position(position, path, number), str(wild).strip().upper(), str(letter).strip().upper(), score)
            for number, (position, wild, letter, score) in enumerate(rows, 1)
        ]
    elif all(column in columns for column in VARIANT_COLUMNS):
        renamed = table.rename_columns(dict(zip(table.column_names, columns)))
        entries = [
            entry
            for number, row in enumerate(renamed, 1)
            if (entry := parse_mutant(row["mutant"], row["score"], path, number))
        ]
    else:
        raise ValueError(
            f"--prior {path}: columns {table.column_names}; a prior has columns mutant,score (ProteinGym) or "
            "position,wild_type,letter,score."
        )
    return build_table(entries, letters, path)


def parse_position(value, path: str, row: int) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--prior {path}: row {row} has position {value!r}; positions are whole numbers from 1.")
    return int(text)


def parse_mutant(mutant, score, path: str, row: int) -> tuple | None:
    """A single substitution's entry (position, wild-type letter, letter, score); None for a variant of several
    substitutions, whose score the table does not need (a variant's score is the sum of its substitutions')."""
    parts = str(mutant).strip().split(":")
    parsed = [SUBSTITUTION.match(part.strip()) for part in parts]
    if not all(parsed) or int(parsed[0].group(2)) < 1:
        raise ValueError(
            f"--prior {path}: row {row} has mutant {mutant!r}, which is not of the form A14D (or A14D:G20K)."
        )
    if len(parsed) > 1:
        return None
    wild, position, letter = parsed[0].groups()
    return int(position), wild.upper(), letter.upper(), score


def build_table(entries: list[tuple], letters: str, path: str) -> PriorTable:
    """The table of `entries` (position, wild-type letter, letter, score), checked."""
    if not entries:
        raise ValueError(f"--prior {path}: no single substitution to read a score from.")
    length = max(position for position, *_ in entries)
    wild_type, scores = ["-"] * length, np.full((length, len(letters)), np.nan)
    for row, (position, wild, letter, score) in enumerate(entries, 1):
        for named in (wild, letter):
            if named not in letters:
                raise ValueError(
                    f"--prior {path}: row {row} names {named!r}, which is not a letter of the model's alphabet "
                    f"{letters!r}."
                )
        value = (
            float(score)
            if isinstance(score, (int, float)) or re.fullmatch(r"\s*[-+.\deE]+\s*", str(score))
            else math.nan
        )
        if not math.isfinite(value):
            raise ValueError(
                f"--prior {path}: row {row} ({wild}{position}{letter}) has score {score!r}; every score must be a "
                "finite number."
            )
        if wild_type[position - 1] not in ("-", wild):
            raise ValueError(
                f"--prior {path}: position {position} has wild-type letter {wild_type[position - 1]!r} in one row and "
                f"{wild!r} at row {row}."
            )
        wild_type[position - 1] = wild
        if letter != wild:
            scores[position - 1, letters.index(letter)] = value
    for position, wild in enumerate(wild_type):
        if wild != "-":
            scores[position, letters.index(wild)] = 0.0
    return PriorTable("".join(wild_type), letters, scores, str(path))


def fit_to_wild_type(prior: PriorTable, wild_type: str, where: str, missing: float | None) -> PriorTable:
    """The prior laid over `wild_type` (the training sequences' reference): every position it names must lie inside it
    and name its letter, else it is a prior for another sequence and is refused, naming the first difference.
    Positions it does not name get no scores (NaN) but the wild type's 0; with `missing`, every substitution without a
    score gets that value instead."""
    if len(prior.wild_type) > len(wild_type):
        named = len(prior.wild_type.rstrip("-"))
        raise ValueError(
            f"--prior {prior.source}: position {named} lies outside the {len(wild_type)}-residue sequences of {where}."
        )
    for position, (named, actual) in enumerate(zip(prior.wild_type, wild_type.upper()), 1):
        if named not in ("-", actual):
            raise ValueError(
                f"--prior {prior.source}: position {position} is {named} in the prior and {actual} in {where}: the "
                "prior is for "
                "another sequence (or numbers positions from elsewhere)."
            )
    scores = np.full((len(wild_type), len(prior.letters)), np.nan)
    scores[: len(prior.wild_type)] = prior.scores
    if missing is not None:
        scores[np.isnan(scores)] = missing
    for position, letter in enumerate(wild_type.upper()):
        if letter in prior.letters:
            scores[position, prior.letters.index(letter)] = 0.0
    return PriorTable(wild_type.upper(), prior.letters, scores, prior.source)


def token_table(prior: PriorTable, tokenizer) -> np.ndarray:
    """The prior as a `LyraPrior` table: (positions x vocabulary) flattened, each letter's score at its token's id,
    0 for the special tokens (padding) and for letters outside the prior's alphabet."""
    table = np.zeros((len(prior.wild_type), len(tokenizer)), dtype=np.float32)
    ids = tokenizer.convert_tokens_to_ids(list(prior.letters))
    table[:, ids] = prior.scores
    return table.reshape(-1)


def write_prior(prior: PriorTable, path: str) -> None:
    """The per-position layout (`TABLE_COLUMNS`), one row per scored substitution."""
    from ..outputs import write_csv

    cells = [
        (position + 1, prior.wild_type[position], letter, prior.scores[position, column])
        for position in range(len(prior.wild_type))
        for column, letter in enumerate(prior.letters)
    ]
    kept = [cell for cell in cells if cell[2] != cell[1] and not math.isnan(cell[3])]
    write_csv(path, {name: [cell[index] for cell in kept] for index, name in enumerate(TABLE_COLUMNS)})


def prior_for_splits(
    path: str, missing: float | None, dataset, letters: str
) -> tuple[PriorTable, dict[str, np.ndarray]]:
    """The prior of file `path` laid over a dataset's sequences (a library of one wild type: the training sequences'
    consensus) and each split's prior scores; refused in one line when the sequences are not of one length, the prior
    is for another sequence, or a sequence holds a substitution it cannot score (unless `missing` gives one a
    value)."""
    from ..data import SEQUENCE_COLUMN
    from ..data.library import consensus

    prior = read_prior(path, letters)
    train = ["".join(sequence.split()) for sequence in dataset["train"][SEQUENCE_COLUMN]]
    if len({len(sequence) for sequence in train}) != 1:
        raise ValueError(
            f"--prior {path}: the training sequences have several lengths; a prior scores substitutions of one wild "
            "type."
        )
    prior = fit_to_wild_type(
        prior, consensus([sequence.upper() for sequence in train]), "the training sequences' consensus", missing
    )
    scores = {}
    for split in dataset:
        sequences = ["".join(sequence.split()) for sequence in dataset[split][SEQUENCE_COLUMN]]
        if (lengths := {len(sequence) for sequence in sequences}) != {len(prior.wild_type)}:
            raise ValueError(
                f"--prior {path}: the {split} split holds sequences of {sorted(lengths)} residues; the wild type has "
                f"{len(prior.wild_type)}."
            )
        scores[split] = prior.variant_scores(sequences, f"a sequence of the {split} split")
    return prior, scores
