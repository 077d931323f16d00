"""Beam search over accumulated mutations, for design spaces larger than `--max-candidates`.

Every single mutant of the space is scored. Then, one mutation count at a time, the `beam_width` best candidates of
the last count (by the acquisition value, constraints applied) each gain one more mutation, at any of the
`EXPANSION_POSITIONS` positions whose best single mutant ranks highest, with every allowed letter there; those are
scored, and so on up to `--max-mutations`. Every scored candidate is a candidate for the batch. The search scores at
most (singles) + (max_mutations - 1) x beam_width x EXPANSION_POSITIONS x (letters) candidates, and finds what
additive effects lead to; a pair whose singles are both poor is not found. Its gap to exhaustive search, on spaces
where both run: BENCHMARKS.md, "Designing the next batch".
"""

from collections.abc import Callable

import numpy as np

from ..cpu import WorkerPool
from .scoring import score_candidates
from .space import DesignSpace, Mutations


# The positions a beam member may gain its next mutation at: those whose best single mutant ranks highest.
EXPANSION_POSITIONS = 32


def beam_width(num_designs: int) -> int:
    """Candidates kept at each mutation count: enough for a batch twice over, and at least 256."""
    return max(256, 2 * num_designs)


def expansions(parents: list[Mutations], space: DesignSpace, positions: list[int]) -> list[Mutations]:
    """Each parent with one more mutation at one of `positions` it does not change, every allowed letter; each
    resulting set once."""
    children = set()
    for parent in parents:
        changed = {position for position, _ in parent}
        for position in positions:
            if position not in changed:
                children.update(tuple(sorted((*parent, (position, letter)))) for letter in space.allowed[position])
    return sorted(children)


def beam_search(
    workers: WorkerPool,
    space: DesignSpace,
    rank: Callable[[np.ndarray], np.ndarray],
    width: int,
    batch_size: int,
    progress: bool,
) -> tuple[list[Mutations], np.ndarray]:
    """The candidates the beam search scored and their scores (candidates, members, targets); `rank` gives the value
    (higher is better, -inf where a constraint fails) of scores."""
    candidates = [((position, letter),) for position in space.positions for letter in space.allowed[position]]
    scores = score_candidates(workers, space, candidates, batch_size, progress)
    values = rank(scores)
    best_single = {}
    for (mutation,), value in zip(candidates, values):
        best_single[mutation[0]] = max(best_single.get(mutation[0], -np.inf), value)
    positions = sorted(best_single, key=lambda position: -best_single[position])[:EXPANSION_POSITIONS]
    level, level_values = candidates, values
    for _ in range(2, space.max_mutations + 1):
        parents = [level[index] for index in np.argsort(-level_values, kind="stable")[:width]]
        level = expansions(parents, space, positions)
        if not level:
            break
        level_scores = score_candidates(workers, space, level, batch_size, progress)
        level_values = rank(level_scores)
        candidates, scores = candidates + level, np.concatenate([scores, level_scores])
    return candidates, scores
