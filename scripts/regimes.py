"""The splits `benchmark_accuracy.py` measures defaults in: one data set, one regime, a stated and seeded rule.

A fitness model is used beyond the rows it was trained on, so accuracy is measured in regimes, not on one split:

- `random`: the data set's own split (GFP, Gifford), else a seeded random fifth of the rows as test.
- `upward` (as FLIP's low_vs_high): the rows whose label is below the pooled rows' 70th percentile train, the rest
  (the fittest 30%, which design aims at) are the test split.
- `mutations` (as FLIP's two_vs_rest): rows within 2 substitutions of the pooled rows' consensus (each position's most
  frequent letter: a variant library's parent) train, rows with more are the test split; for `four-site`, as FLIP's
  three_vs_rest for GB1, rows within 3 substitutions of the wild type train and the quadruple mutants are the test.
- `unseen` (ProteinGym's `fold_modulo_5` and `fold_contiguous_5`): cross-validation over folds in which every test
  position is one that training never saw mutated; the fold file is ProteinGym's own.

Data sets: `gfp` and `gifford` (`../shared/data`, train and test files pooled where the regime re-splits them),
`synthetic` (7,500 variants of lyra-train's built-in landscape, landscape seed 0), `four-site` (a combinatorial library
as GB1's of Wu et al. 2016: 8,000 of the 160,000 variants of 4 sites of a random 56-residue protein, seed 0, whose
fitness is softplus(2 (z - 2)) of a latent z with an N(0, 1) effect per site and letter and an N(0, 1) term per pair of
sites and letter pair, plus noise of 0.05: most variants are dead, the few fit ones need the right pairs), `dna-motif`
and `dna-guide` (below) and the ProteinGym assays of `../shared/data/proteingym`. `dna-motif` is a set of sequences of
one length that are not variants of one sequence: 5,000 uniformly random 30-nucleotide sequences (seed 0), labelled by
the sum of a per-position term (a random weight per position and nucleotide, decaying from the 3' end, as in a guide's
seed region), a motif term (the best match of a random 6-nucleotide position weight matrix anywhere in the sequence) and
a GC-content term (-(GC - 0.5)^2), each scaled to unit variance, plus Gaussian noise of 0.3. `dna-guide` is another:
6,000 guide-target pairs (seed 0), a uniformly random 20-nucleotide guide followed by its 20-nucleotide target, which
differs from the guide at Poisson(1.5) random positions; the label is the guide's efficiency (a random weight per
position and nucleotide, and -4 (GC - 0.55)^2) plus the mismatches' penalties (0.3 at the 5' end to 1.8 at the 3' end,
and 0.5 more for each pair of adjacent mismatches), plus Gaussian noise of 0.2: what a one-hot model cannot see is
whether the target matches the guide. Both have a `random` split only.
"""

import csv
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROTEINGYM = SHARED / "proteingym"
UPWARD_QUANTILE = 0.7
MAX_TRAINED_MUTATIONS = 2
RANDOM_TEST_SHARE = 0.2


@dataclass
class Source:
    """A data set's rows as lyra-train reads them: the pooled rows (header and table), the column names, and the
    flags its runs need."""

    header: list[str]
    rows: list[list[str]]
    sequence_column: str
    label_column: str
    flags: list[str]
    reference: str | None = None  # what substitutions are counted from (default: the rows' consensus)
    max_trained_mutations: int = MAX_TRAINED_MUTATIONS

    def column(self, name: str) -> list[str]:
        index = self.header.index(name)
        return [row[index] for row in self.rows]

    @property
    def labels(self) -> np.ndarray:
        return np.array([float(value) for value in self.column(self.label_column)])


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        return next(reader), list(reader)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """Write once, atomically: runs side by side may ask for the same split."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        with open(partial, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
        os.replace(partial, path)
    return path


def shared_source(name: str) -> tuple[Source, int]:
    """A shared data set's rows, train file first (and how many rows it holds, so that its own split is recoverable)."""
    columns = {"gfp": ("sequence", "label", []), "gifford": ("CDR3", "enrichment", ["--padding-characters", "J"])}
    sequence, label, flags = columns[name]
    header, train = read_csv(SHARED / name / "train.csv")
    _, test = read_csv(SHARED / name / "test.csv")
    return Source(header, train + test, sequence, label, flags), len(train)


def synthetic_source() -> Source:
    from lyra_hf.data.synthetic import synthetic_fitness_dataset

    dataset = synthetic_fitness_dataset(seed=0)
    rows = [
        [sequence, f"{labels[0]:.6f}"]
        for split in dataset.values()
        for sequence, labels in zip(split["sequence"], split["labels"])
    ]
    return Source(["sequence", "fitness"], rows, "sequence", "fitness", [])


def four_site_source(count: int = 8000, length: int = 56, seed: int = 0) -> Source:
    """The `four-site` set of the module's docstring."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    wild_type = rng.integers(20, size=length)
    sites = np.array([38, 39, 40, 53])  # GB1's V39, D40, G41 and V54, 0-based
    additive = rng.normal(0.0, 1.0, (4, 20))
    pairwise = rng.normal(0.0, 1.0, (4, 4, 20, 20))
    chosen = rng.choice(20**4, count, replace=False)
    combinations = np.stack(np.unravel_index(chosen, (20,) * 4), axis=1)  # (count, 4) letters at the sites
    latent = additive[np.arange(4), combinations].sum(1)
    for first in range(4):
        for second in range(first + 1, 4):
            latent += pairwise[first, second, combinations[:, first], combinations[:, second]]
    fitness = np.logaddexp(0.0, 2.0 * (latent - 2.0)) + rng.normal(0.0, 0.05, count)
    sequences = np.tile(wild_type, (count, 1))
    sequences[:, sites] = combinations
    rows = [["".join(letters[sequence]), f"{value:.6f}"] for sequence, value in zip(sequences, fitness)]
    return Source(
        ["sequence", "fitness"], rows, "sequence", "fitness", [], "".join(letters[wild_type]), max_trained_mutations=3
    )


def dna_motif_source(count: int = 5000, length: int = 30, seed: int = 0) -> Source:
    """The `dna-motif` set of the module's docstring."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGT"))
    encoded = rng.integers(4, size=(count, length))
    positional = rng.normal(size=(length, 4)) * np.exp(-(length - 1 - np.arange(length)) / 10.0)[:, None]
    weights = rng.normal(size=(6, 4)) * 1.5
    windows = np.lib.stride_tricks.sliding_window_view(encoded, 6, axis=1)  # (count, length - 5, 6)
    motif = weights[np.arange(6), windows].sum(-1).max(1)
    gc = np.isin(encoded, (1, 2)).mean(1)
    terms = [positional[np.arange(length), encoded].sum(1), motif, -((gc - 0.5) ** 2)]
    labels = sum((term - term.mean()) / term.std() for term in terms) + rng.normal(0.0, 0.3, count)
    rows = [["".join(letters[row]), f"{label:.6f}"] for row, label in zip(encoded, labels)]
    return Source(["sequence", "activity"], rows, "sequence", "activity", ["--alphabet", "dna"])


def dna_guide_source(count: int = 6000, length: int = 20, seed: int = 0) -> Source:
    """The `dna-guide` set of the module's docstring."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGT"))
    guides = rng.integers(4, size=(count, length))
    targets = guides.copy()
    mismatched = np.zeros((count, length), dtype=bool)
    for row, mismatches in enumerate(np.minimum(rng.poisson(1.5, count), length)):
        positions = rng.choice(length, mismatches, replace=False)
        targets[row, positions] = (guides[row, positions] + rng.integers(1, 4, size=mismatches)) % 4
        mismatched[row, positions] = True
    preference = rng.normal(0.0, 0.3, (length, 4))
    gc = np.isin(guides, (1, 2)).mean(1)
    efficiency = preference[np.arange(length), guides].sum(1) - 4 * (gc - 0.55) ** 2
    penalty = -(mismatched * (0.3 + 1.5 * np.arange(length) / (length - 1))).sum(1)
    penalty -= 0.5 * (mismatched[:, 1:] & mismatched[:, :-1]).sum(1)
    labels = efficiency + penalty + rng.normal(0.0, 0.2, count)
    rows = [
        ["".join(letters[guide]) + "".join(letters[target]), f"{label:.6f}"]
        for guide, target, label in zip(guides, targets, labels)
    ]
    return Source(["sequence", "activity"], rows, "sequence", "activity", ["--alphabet", "dna"])


def substitution_counts(sequences: list[str], reference: str | None) -> np.ndarray:
    """Substitutions from `reference`, or from the consensus (each position's most frequent letter) of sequences of
    one length."""
    table = np.array([list(sequence) for sequence in sequences])
    reference = list(reference) if reference else [max(set(column), key=list(column).count) for column in table.T]
    return (table != np.array(reference)).sum(1)


def split_rows(source: Source, regime: str, train_file_rows: int | None, seed: int) -> tuple[list[int], list[int]]:
    """Row indices of the regime's train and test splits (see the module's docstring)."""
    everything = np.arange(len(source.rows))
    if regime == "random" and train_file_rows is not None:
        return list(everything[:train_file_rows]), list(everything[train_file_rows:])
    if regime == "random":
        test = np.random.default_rng(seed).random(len(everything)) < RANDOM_TEST_SHARE
    elif regime == "upward":
        labels = source.labels
        test = labels >= np.quantile(labels, UPWARD_QUANTILE)
    elif regime == "mutations":
        test = (
            substitution_counts(source.column(source.sequence_column), source.reference) > source.max_trained_mutations
        )
    else:
        raise ValueError(f"no split rule for regime {regime!r}")
    return list(everything[~test]), list(everything[test])


def source_for(name: str) -> tuple[Source, int | None]:
    if name in ("gfp", "gifford"):
        return shared_source(name)
    return {
        "synthetic": synthetic_source,
        "four-site": four_site_source,
        "dna-motif": dna_motif_source,
        "dna-guide": dna_guide_source,
    }[name](), None


def regime_files(name: str, regime: str, rows: int | None, seed: int, folder: Path) -> tuple[list[str], list[str]]:
    """lyra-train's file flags and data flags for data set `name` in `regime`: the train split subsampled to `rows`
    (seeded, when given), the test split whole. Files are written once under `folder`."""
    if name in proteingym_assays():
        scheme = {
            "random": "fold_random_5",
            "unseen-modulo": "fold_modulo_5",
            "unseen-contiguous": "fold_contiguous_5",
        }[regime]
        flags = ["--sequence-column", "mutated_sequence", "--label-columns", "DMS_score", "--fold-column", scheme]
        return ["--train-file", str(PROTEINGYM / f"{name}.csv")], flags
    source, train_file_rows = source_for(name)
    split_seed = 0  # one split per data set and regime; `seed` draws the training subset
    train, test = split_rows(source, regime, train_file_rows, split_seed)
    if rows and rows < len(train):
        train = sorted(np.random.default_rng(seed).permutation(train)[:rows].tolist())
    stem = f"{name}-{regime}-{rows or 'all'}-seed{seed if rows else 0}"
    paths = {
        "train": write_csv(folder / f"{stem}-train.csv", source.header, [source.rows[index] for index in train]),
        "test": write_csv(folder / f"{name}-{regime}-test.csv", source.header, [source.rows[index] for index in test]),
    }
    files = ["--train-file", str(paths["train"]), "--test-file", str(paths["test"])]
    return files, ["--sequence-column", source.sequence_column, "--label-columns", source.label_column, *source.flags]


def proteingym_assays() -> list[str]:
    return sorted(path.stem for path in PROTEINGYM.glob("*.csv") if path.stem != "published_spearman")


REGIMES = {
    "gfp": ("random", "upward", "mutations"),
    "synthetic": ("random", "upward", "mutations"),
    "four-site": ("random", "upward", "mutations"),
    "gifford": ("random",),
    "dna-motif": ("random",),
    "dna-guide": ("random",),
}
