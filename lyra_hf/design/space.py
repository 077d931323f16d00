"""The design space of `lyra-design`: which positions of the wild type may change, to which letters, and how many at
once; its size, and its candidates enumerated by the positions they change (the groups incremental scoring takes).

A candidate is a substitution variant of the wild type, held as its mutations: a tuple of (0-based position, letter
index into the alphabet's mutant letters), sorted by position.
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..scan.mutants import WildType, parse_positions
from ..scan.scoring import substitution_table


Mutations = tuple[tuple[int, int], ...]


@dataclass
class DesignSpace:
    """`allowed[p]`: the letter indices that may replace the wild type at 0-based position p (the design positions
    are its keys, in order); a candidate changes 1 to `max_mutations` of them."""

    wild: WildType
    allowed: dict[int, list[int]]
    max_mutations: int

    @property
    def positions(self) -> list[int]:
        return list(self.allowed)

    def size(self) -> int:
        """The number of candidates: the sum over sets of at most `max_mutations` positions of the product of their
        letter counts (elementary symmetric sums, without listing the sets)."""
        sums = [1] + [0] * self.max_mutations  # sums[j]: candidates changing exactly j positions so far
        for letters in (len(choices) for choices in self.allowed.values()):
            for changed in range(self.max_mutations, 0, -1):
                sums[changed] += sums[changed - 1] * letters
        return sum(sums[1:])

    def site_tables(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every candidate, as `substitution_table`s: one per number of mutations, over every set of that many
        design positions (sites (S, j), letter indices (S, M, j) padded with -1, mask of the real ones (S, M))."""
        for count in range(1, self.max_mutations + 1):
            sites = list(itertools.combinations(self.positions, count))
            if sites:
                yield substitution_table(sites, self.allowed)

    def mutation_name(self, position: int, letter: int) -> str:
        """`V39A`: wild-type letter, 1-based position, new letter."""
        return f"{self.wild.sequence[position]}{position + 1}{self.wild.letters[letter]}"

    def sequence(self, mutations: Mutations) -> str:
        letters = list(self.wild.sequence)
        for position, letter in mutations:
            letters[position] = self.wild.letters[letter]
        return "".join(letters)


def parse_letters(spec: str | None, wild: WildType, positions: list[int]) -> dict[int, list[int]]:
    """`--letters`: comma-separated items, each either letters for every design position (`AVILMFWY`) or letters for
    some (`39:AG`, `10-12:DE`, 1-based); default every mutant letter of the alphabet. The wild type's own letter is
    never a substitution. Returns the allowed letter indices per 0-based design position."""
    everywhere = wild.letters
    per_position = {}
    for item in (part.strip() for part in (spec or "").split(",")):
        if not item:
            continue
        where, _, letters = item.rpartition(":")
        unknown = sorted(set(letters.upper()) - set(wild.letters))
        if unknown or not letters:
            raise ValueError(
                f"--letters {item!r}: {', '.join(map(repr, unknown)) or 'no letters'}: the alphabet's letters are "
                f"{wild.letters}."
            )
        if not where:
            everywhere = letters.upper()
            continue
        for position in parse_positions(where, len(wild.sequence), "--letters", minimum=1):
            if position - 1 not in positions:
                raise ValueError(
                    f"--letters {item!r}: position {position} is not among the design positions (--positions)."
                )
            per_position[position - 1] = letters.upper()
    allowed = {}
    for position in positions:
        letters = per_position.get(position, everywhere)
        allowed[position] = sorted(
            {wild.letters.index(letter) for letter in letters} & set(wild.choices.get(position, []))
        )
    return {position: choices for position, choices in allowed.items() if choices}


def build_space(wild: WildType, positions: str | None, letters: str | None, max_mutations: int) -> DesignSpace:
    """The space of `--positions` (default every position that can change), `--letters` and `--max-mutations`,
    refused when it holds no candidate."""
    chosen = (
        [position - 1 for position in parse_positions(positions, len(wild.sequence), "--positions", minimum=1)]
        if positions
        else list(wild.mutable)
    )
    unmutable = [position + 1 for position in chosen if position not in wild.choices]
    if unmutable:
        raise ValueError(
            f"--positions: position {unmutable[0]} is a padding character of the wild type, which cannot be designed."
        )
    space = DesignSpace(wild, parse_letters(letters, wild, chosen), max_mutations)
    if not space.allowed:
        raise ValueError(
            "the design space is empty: --letters leaves no letter other than the wild type's at any design position."
        )
    return space
