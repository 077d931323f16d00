"""The built-in synthetic fitness landscape lyra-train trains on when given no data files, and its true fitness
function, which simulations of design rounds read (`scripts/benchmark_design.py`)."""

from dataclasses import dataclass

import datasets
import numpy as np

from .files import LABELS_COLUMN, SEQUENCE_COLUMN


CANONICAL = "ACDEFGHIKLMNPQRSTVWY"
# The measurement noise of the landscape's labels (standard deviation), on top of the true fitness.
NOISE = 0.1


def synthetic_wild_type(length: int = 30, seed: int = 0) -> str:
    """The wild type of `synthetic_fitness_dataset(length=length, seed=seed)` (its first random draw), e.g. to scan
    the model `lyra-train` trains on it: `synthetic_wild_type(seed=42)` for the default run."""
    return "".join(CANONICAL[index] for index in np.random.default_rng(seed).integers(len(CANONICAL), size=length))


@dataclass
class SyntheticLandscape:
    """An epistatic fitness landscape around a random wild type: additive effects per substitution, pairwise terms for
    3 x length interacting position pairs (a term per letter pair) and third-order terms for length // 2 triples of
    positions (one per triple, when all three are mutated). The multilinear polynomial over positions that motivates
    Lyra. `fitness` is its true, noise-free value."""

    wild_type: np.ndarray  # letter indices into CANONICAL
    additive: np.ndarray
    pairs: np.ndarray
    pair_terms: np.ndarray
    triples: np.ndarray
    triple_terms: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, length: int) -> "SyntheticLandscape":
        wild_type = rng.integers(len(CANONICAL), size=length)
        additive = rng.normal(0.0, 1.0, (length, len(CANONICAL)))
        additive[np.arange(length), wild_type] = 0.0
        pairs = np.array([rng.choice(length, 2, replace=False) for _ in range(3 * length)])
        pair_terms = rng.normal(0.0, 0.5, (len(pairs), len(CANONICAL), len(CANONICAL)))
        triples = np.array([rng.choice(length, 3, replace=False) for _ in range(length // 2)])
        return cls(wild_type, additive, pairs, pair_terms, triples, rng.normal(0.0, 1.0, len(triples)))

    @property
    def wild_type_sequence(self) -> str:
        return "".join(CANONICAL[index] for index in self.wild_type)

    def encode(self, sequences: list[str]) -> np.ndarray:
        """Letter indices (sequences, length) of substitution variants of the wild type."""
        return np.array(
            [[CANONICAL.index(letter) for letter in sequence] for sequence in sequences], dtype=np.int64
        ).reshape(len(sequences), len(self.wild_type))

    def fitness(self, variants: np.ndarray) -> np.ndarray:
        """The true fitness of variants given as letter indices (variants, length), or as sequences."""
        variants = self.encode(variants) if len(variants) and isinstance(variants[0], str) else np.asarray(variants)
        length = len(self.wild_type)
        mutated = variants != self.wild_type
        fitness = np.where(mutated, self.additive[np.arange(length), variants], 0.0).sum(1)
        both = mutated[:, self.pairs[:, 0]] & mutated[:, self.pairs[:, 1]]
        fitness += (
            both
            * self.pair_terms[np.arange(len(self.pairs)), variants[:, self.pairs[:, 0]], variants[:, self.pairs[:, 1]]]
        ).sum(1)
        return fitness + (mutated[:, self.triples].all(-1) * self.triple_terms).sum(1)

    def random_variants(self, rng: np.random.Generator, count: int, exclude=()) -> np.ndarray:
        """`count` distinct variants, none of them the wild type or in `exclude` (tuples of letter indices), each with
        1 + Poisson(2) substitutions at random positions: (count, length) letter indices."""
        length, variants, seen = len(self.wild_type), [], {tuple(self.wild_type), *exclude}
        while len(variants) < count:
            variant = self.wild_type.copy()
            positions = rng.choice(length, min(length, 1 + rng.poisson(2.0)), replace=False)
            variant[positions] = (
                self.wild_type[positions] + rng.integers(1, len(CANONICAL), size=len(positions))
            ) % len(CANONICAL)
            if tuple(variant) not in seen:
                seen.add(tuple(variant))
                variants.append(variant)
        return np.stack(variants)


def synthetic_landscape(length: int = 30, seed: int = 0) -> SyntheticLandscape:
    """The landscape of `synthetic_fitness_dataset(length=length, seed=seed)`, to read any variant's true fitness."""
    return SyntheticLandscape.draw(np.random.default_rng(seed), length)


def synthetic_fitness_dataset(
    num_train: int = 6000,
    num_validation: int = 500,
    num_test: int = 1000,
    length: int = 30,
    seed: int = 0,
) -> datasets.DatasetDict:
    """A seeded sample of `SyntheticLandscape` (regression, target `fitness`): variants with 1 + Poisson(2)
    substitutions, labelled with their true fitness plus small noise (`NOISE`). `lyra-train` trains on it when given
    no data files."""
    rng = np.random.default_rng(seed)
    landscape = SyntheticLandscape.draw(rng, length)
    total = num_train + num_validation + num_test
    variants = landscape.random_variants(rng, total)
    fitness = landscape.fitness(variants) + rng.normal(0.0, NOISE, total)
    letters = np.array(list(CANONICAL))
    sequences = ["".join(letters[variant]) for variant in variants]
    features = datasets.Features(
        {SEQUENCE_COLUMN: datasets.Value("string"), LABELS_COLUMN: datasets.Sequence(datasets.Value("float32"))}
    )
    bounds = {
        "train": (0, num_train),
        "validation": (num_train, num_train + num_validation),
        "test": (num_train + num_validation, total),
    }
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    SEQUENCE_COLUMN: sequences[start:end],
                    LABELS_COLUMN: [[float(value)] for value in fitness[start:end]],
                },
                features=features,
            )
            for split, (start, end) in bounds.items()
        }
    )
