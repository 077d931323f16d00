"""A site-independent model of a multiple sequence alignment, the classic zero-shot baseline of fitness prediction:
each position's letter frequencies among the aligned homologues, reweighted and smoothed, and a substitution's score
the log ratio of the new letter's frequency to the wild type's (the "independent" model of Hopf et al., 2017, and
ProteinGym's site-independent baseline).

- Format: A2M or A3M (uppercase letters and `-` are the query's match columns; lowercase letters and `.` are
  insertions, dropped) or an aligned FASTA of one width (every column a match column). The first sequence is the query,
  the wild type; columns where it has a gap are dropped, and its lowercase residues (in A2M/A3M) are positions
  without a score.
- Weights: each sequence counts 1 / (the number of sequences, itself included, that share at least `IDENTITY` of its
  match columns, gaps included), so that a family's many near copies count as one (Morcos et al., 2011).
- Frequencies: at each position, the weighted counts of the letters among sequences without a gap there, plus a
  pseudocount of `PSEUDOCOUNT` weighted sequences spread evenly over the letters.
"""

from pathlib import Path

import numpy as np

from ..data import iter_fasta
from .table import PriorTable


CANONICAL = "ACDEFGHIKLMNPQRSTVWY"
IDENTITY = 0.8
PSEUDOCOUNT = 1.0


def read_alignment(path: str) -> tuple[str, list[str]]:
    """The query (the first record, its insertions kept as lowercase) and every record's match columns (uppercase
    letters and gaps, `-`), all of one width; refused in one line naming the record that is not."""
    records = [record["sequence"] for record in iter_fasta(path, parse_numbers=False)]
    has_insertions = any(character.islower() or character == "." for record in records for character in record)
    matches = [
        "".join(character for character in record if not (character.islower() or character == ".")).upper()
        for record in records
    ]
    if not has_insertions:
        matches = [record.upper().replace(".", "-") for record in records]
    width = len(matches[0])
    for number, match in enumerate(matches[1:], 2):
        if len(match) != width:
            raise ValueError(
                f"--alignment {path}: record {number} has {len(match)} match columns and the query {width}; not an "
                "alignment (A2M, A3M or aligned FASTA)."
            )
    if len(records) < 2:
        raise ValueError(f"--alignment {path}: one sequence; an alignment needs homologues.")
    return records[0], matches


def sequence_weights(matches: list[str], identity: float = IDENTITY) -> np.ndarray:
    """Each sequence's weight: 1 / its neighbours at `identity` or more over the match columns (see the module)."""
    table = np.frombuffer("".join(matches).encode("ascii"), dtype=np.uint8).reshape(len(matches), -1)
    neighbours = np.zeros(len(matches))
    for start in range(0, len(matches), 512):  # blocks of rows keep the comparison's memory small
        block = table[start : start + 512]
        shared = (block[:, None, :] == table[None, :, :]).mean(-1)
        neighbours[start : start + len(block)] = (shared >= identity).sum(1)
    return 1.0 / neighbours


def site_independent_prior(path: str, letters: str = CANONICAL, first_position: int = 1) -> PriorTable:
    """The site-independent prior of the alignment at `path` (see the module's docstring), for the query's positions
    numbered from `first_position`; letters outside `letters` in the alignment count as gaps."""
    query, matches = read_alignment(path)
    query_columns = [index for index, character in enumerate(matches[0]) if character != "-"]
    columns = np.array([[record[index] for index in query_columns] for record in matches])  # (sequences, query columns)
    weights = sequence_weights(matches)
    counts = np.stack(
        [((columns == letter) * weights[:, None]).sum(0) for letter in letters], axis=1
    )  # (columns, letters)
    frequencies = (counts + PSEUDOCOUNT / len(letters)) / (counts.sum(1, keepdims=True) + PSEUDOCOUNT)
    residues = "".join(character.upper() for character in query if character not in "-.")
    scores = np.full((len(residues), len(letters)), np.nan)
    match_index, residue_index = 0, 0
    for character in query:
        if character in "-.":  # a gap of the query: a match column it has no residue in (dropped), or none at all
            continue
        if not character.islower() and residues[residue_index] in letters:
            wild = letters.index(residues[residue_index])
            scores[residue_index] = np.log(frequencies[match_index]) - np.log(frequencies[match_index, wild])
        match_index += not character.islower()
        residue_index += 1
    offset = np.full((first_position - 1, len(letters)), np.nan)
    return PriorTable("-" * (first_position - 1) + residues, letters, np.concatenate([offset, scores]), Path(path).name)
