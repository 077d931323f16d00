"""Scoring candidates with lyra-scan's exact incremental scorer: candidates are grouped by the positions they change,
each group one row of a `substitution_table`, so the wild type's cached activations serve every one of them."""

from collections import defaultdict

import numpy as np

from ..cpu import WorkerPool
from ..scan.scoring import score_group, score_sites
from .space import DesignSpace, Mutations


def grouped_tables(candidates: list[Mutations]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]]:
    """Per number of mutations j: sites (S, j), letter indices (S, M, j) padded with -1, the real ones (S, M), and the
    candidates' indices in the order `score_sites` returns their scores (site, then letter)."""
    by_sites = defaultdict(list)
    for index, mutations in enumerate(candidates):
        by_sites[tuple(position for position, _ in mutations)].append(index)
    tables = []
    for count in sorted({len(sites) for sites in by_sites}):
        groups = [(sites, indices) for sites, indices in by_sites.items() if len(sites) == count]
        width = max(len(indices) for _, indices in groups)
        letters = np.full((len(groups), width, count), -1, dtype=np.int64)
        order = []
        for row, (sites, indices) in enumerate(groups):
            letters[row, : len(indices)] = [[letter for _, letter in candidates[index]] for index in indices]
            order.extend(indices)
        sites = np.array([sites for sites, _ in groups], dtype=np.int64).reshape(len(groups), count)
        tables.append((sites, letters, letters[..., 0] >= 0, order))
    return tables


def wild_type_scores(state: dict, space: DesignSpace) -> np.ndarray:
    """The wild type's scores (members, targets): its own letter put back at its first mutable position."""
    first = space.wild.mutable[0]
    return score_group(state, (np.zeros((1, 1), dtype=np.int64) + first, space.wild.ids[[first]].numpy()[None, None]))[
        0, 0
    ]


def score_candidates(
    workers: WorkerPool, space: DesignSpace, candidates: list[Mutations], batch_size: int, progress: bool
) -> np.ndarray:
    """Every candidate's scores, (candidates, members, targets), in the order of `candidates`; the wild type itself (no
    mutation) gets its own score."""
    wild = wild_type_scores(workers.state, space)
    scores = np.empty((len(candidates), *wild.shape))
    scores[[index for index, mutations in enumerate(candidates) if not mutations]] = wild
    mutated = [index for index, mutations in enumerate(candidates) if mutations]
    for sites, letters, real, order in grouped_tables([candidates[index] for index in mutated]):
        description = f"{sites.shape[1]}-mutation candidates"
        scored = score_sites(workers, sites, letters, real, space.wild.letter_ids, batch_size, description, progress)
        scores[[mutated[index] for index in order]] = scored
    return scores


def enumerate_space(space: DesignSpace) -> list[Mutations]:
    """Every candidate of the space, by number of mutations, then positions, then letters."""
    candidates = []
    for sites, letters, real in space.site_tables():
        for row, site in enumerate(sites.tolist()):
            candidates.extend(tuple(zip(site, combination)) for combination in letters[row][real[row]].tolist())
    return candidates
