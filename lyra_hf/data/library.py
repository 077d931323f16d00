"""Whether training sequences form a variant library: most of them within a few substitutions of one reference.

In a library (a deep mutational scan, a combinatorial or error-prone library of one protein) a position means the
same residue in every sequence, so a weight per position and letter is the right bias, and the reference (each
position's most frequent letter, the library's parent) says what a substitution is. Sequences of one length that are
not variants of one sequence (guides, promoters, CDR3s padded to one width) share a length and nothing else.
"""

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np


# A library's rows lie within `max(MIN_SUBSTITUTIONS, SUBSTITUTION_SHARE x length)` substitutions of their consensus,
# and at least `LIBRARY_SHARE` of the rows must: a deep mutational scan's rows differ from it at 1 position, GFP's
# error-prone library at a median of 4 of 237, a four-site combinatorial library at up to 4; CDR3s padded to 20 at a
# median of 13, random 30-nucleotide guides at 22.
MIN_SUBSTITUTIONS = 4
SUBSTITUTION_SHARE = 0.1
LIBRARY_SHARE = 0.5


@dataclass(frozen=True)
class LibraryCheck:
    """What `check_library` found: whether the sequences are a variant library, and the evidence (results.json's
    `components.library`)."""

    is_library: bool
    reason: str
    rows: int
    length: int | None  # the sequences' one length; None when they differ
    max_substitutions: int | None  # the most substitutions from the consensus a library's row may have
    rows_within: int  # rows within `max_substitutions` of the consensus
    median_substitutions: float | None

    def record(self) -> dict:
        return asdict(self)


def consensus(sequences: list[str]) -> str:
    """Each position's most frequent letter (the first seen, on a tie) over sequences of one length."""
    return "".join(Counter(column).most_common(1)[0][0] for column in zip(*sequences))


def substitutions(sequences: list[str], reference: str) -> np.ndarray:
    """Positions at which each sequence (of the reference's length) differs from `reference`."""
    table = np.frombuffer("".join(sequences).encode("utf-32-le"), dtype=np.uint32).reshape(
        len(sequences), len(reference)
    )
    return (table != np.frombuffer(reference.encode("utf-32-le"), dtype=np.uint32)).sum(1)


def check_library(sequences: list[str]) -> LibraryCheck:
    """Whether `sequences` (whitespace removed, case ignored) form a variant library (see the module's docstring)."""
    sequences = ["".join(sequence.split()).upper() for sequence in sequences]
    lengths = {len(sequence) for sequence in sequences}
    if len(lengths) != 1:
        reason = (
            f"the training sequences have {len(lengths)} lengths ({min(lengths)}-{max(lengths)}): not variants of "
            "one sequence"
        )
        return LibraryCheck(False, reason, len(sequences), None, None, 0, None)
    length = lengths.pop()
    limit = max(MIN_SUBSTITUTIONS, int(SUBSTITUTION_SHARE * length))
    counts = substitutions(sequences, consensus(sequences))
    within, median = int((counts <= limit).sum()), float(np.median(counts))
    is_library = within >= LIBRARY_SHARE * len(sequences)
    share = f"{within / len(sequences):.0%} of the {len(sequences):,} training sequences"
    verdict = "a variant library" if is_library else "not a variant library"
    reason = (
        f"{verdict}: {share} lie within {limit} substitutions of their consensus (median {median:g} of {length} "
        "positions)"
    )
    return LibraryCheck(is_library, reason, len(sequences), length, limit, within, median)
