"""The built-in synthetic fitness landscape lyra-train trains on when given no data files."""

import datasets
import numpy as np

from .files import LABELS_COLUMN, SEQUENCE_COLUMN


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
