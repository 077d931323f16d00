"""Whether training sequences form a variant library (`lyra_hf.data.library`)."""

import numpy as np

from lyra_hf.data.library import check_library, consensus, substitutions


LETTERS = "ACDEFGHIKLMNPQRSTVWY"


def variants(parent: str, rows: int, most: int, seed: int = 0) -> list[str]:
    """`rows` variants of `parent`, each with 1 to `most` substitutions at random positions."""
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(rows):
        letters = list(parent)
        for position in rng.choice(len(parent), rng.integers(1, most + 1), replace=False):
            letters[position] = rng.choice([letter for letter in LETTERS if letter != parent[position]])
        made.append("".join(letters))
    return made


def test_consensus_and_substitutions_match_a_direct_count():
    sequences = ["ACDE", "ACDF", "GCDE", "ACHE"]
    assert consensus(sequences) == "ACDE"
    assert substitutions(sequences, "ACDE").tolist() == [
        sum(a != b for a, b in zip(sequence, "ACDE")) for sequence in sequences
    ]


def test_a_library_is_most_rows_within_a_few_substitutions_of_their_consensus():
    """Variants of one parent are a library, even when the parent itself is not among them and a third of the rows
    lie far from it; random sequences of one length, or sequences of several lengths, are not."""
    rng = np.random.default_rng(1)
    parent = "".join(rng.choice(list(LETTERS), 60))
    library = variants(parent, 200, most=6)
    check = check_library(library)
    assert check.is_library and check.length == 60 and check.max_substitutions == 6 and check.rows_within == 200
    assert (
        "a variant library" in check.reason
        and "100% of the 200 training sequences lie within 6 substitutions" in check.reason
    )

    mixed = variants(parent, 120, most=4) + variants(parent, 80, most=40, seed=2)
    assert check_library(mixed).is_library  # 60% near the parent
    far = variants(parent, 80, most=4) + variants(parent, 120, most=40, seed=2)
    assert not check_library(far).is_library  # 40%: no parent most rows share

    guides = ["".join(rng.choice(list("ACGT"), 30)) for _ in range(200)]
    check = check_library(guides)
    assert not check.is_library and check.max_substitutions == 4 and check.median_substitutions > 15
    assert check.reason.startswith("not a variant library: 0% of the 200 training sequences lie within 4 substitutions")

    lengths = check_library(["ACDE", "ACDEF", "ACD"])
    assert not lengths.is_library and lengths.length is None and "3 lengths (3-5)" in lengths.reason
