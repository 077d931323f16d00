"""The one-hot baseline beside every lyra-train result: each position's letter one-hot, and one linear model on top
(ridge for regression, logistic regression for classes; for per-residue classes, a logistic regression on a one-hot
window around each residue). It is the first supervised baseline of FLIP and ProteinGym, and the right bias for
fixed-length variant libraries, so a model that cannot beat it has learnt no more than per-position effects.

Honest like the model: fitted on the run's train split, its regularisation chosen on validation, test scored once.

A model with site effects starts from the same fit or from one with `shared_substitutions` (`fit_start`): besides
each position's letter, each substitution type (the library's wild-type letter at a position, to the variant's
letter) and the number of substitutions are features, so that a few hundred variants share what a substitution to
proline or a further mutation costs anywhere, where one-hot ridge learns each position's letters alone. Both are
linear in the one-hot columns, so the fit collapses to one weight per position and letter
(`BaselineFit.site_coefficients`).
"""

import time
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from transformers import EvalPrediction

from .data import LABELS_COLUMN, SEQUENCE_COLUMN
from .metrics import defined_metrics, metric_is_better
from .tasks import Task


# The regularisation strengths tried, each fitted on train and scored on validation: ridge's alpha, and the inverse
# strength C of the logistic regressions.
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
LOGISTIC_CS = (0.01, 0.1, 1.0)
# Residues on each side that the per-residue baseline sees (a window of 2 x 7 + 1, as in FLIP's CNN-free baselines).
WINDOW = 7
# The fit stays a small share of a run: at most this many training sequences (or residues, per residue), a seeded
# random subset beyond that (BENCHMARKS.md, "One-hot baseline").
MAX_TRAIN_SEQUENCES = 20_000
MAX_TRAIN_RESIDUES = 100_000
# Up to this many training rows, a regression model's start is chosen by exact leave-one-out on them (`fit_start`);
# its closed form costs one fit, cubic in min(rows, features). BENCHMARKS.md, "Choosing the start by leave-one-out".
LEAVE_ONE_OUT_MAX_ROWS = 5_000


def one_hot(sequences: list[str], letters: str, width: int) -> sparse.csr_matrix:
    """(sequences, width x letters): column `position * len(letters) + letter` is 1 where the sequence has that letter
    there; other characters (padding, unknown) and positions beyond `width` set nothing."""
    index = {letter: column for column, letter in enumerate(letters)}
    rows, columns = [], []
    for row, sequence in enumerate(sequences):
        for position, character in enumerate(sequence[:width].upper()):
            if character in index:
                rows.append(row)
                columns.append(position * len(letters) + index[character])
    values = np.ones(len(rows), dtype=np.float64)
    return sparse.csr_matrix((values, (rows, columns)), shape=(len(sequences), width * len(letters)))


def window_one_hot(sequences: list[str], letters: str, window: int = WINDOW) -> sparse.csr_matrix:
    """(residues, (2 x window + 1) x (letters + 1)): each residue's neighbourhood one-hot, offset by offset, with one
    more symbol for "beyond the sequence's end"; residues of all sequences in order."""
    symbols = len(letters) + 1
    index = {letter: column for column, letter in enumerate(letters)}
    rows, columns, row = [], [], 0
    for sequence in sequences:
        sequence = sequence.upper()
        for position in range(len(sequence)):
            for offset in range(-window, window + 1):
                neighbour = position + offset
                symbol = index.get(sequence[neighbour]) if 0 <= neighbour < len(sequence) else len(letters)
                if symbol is not None:
                    rows.append(row)
                    columns.append((offset + window) * symbols + symbol)
            row += 1
    return sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(row, (2 * window + 1) * symbols))


@dataclass
class Design:
    """A split as the baseline sees it: features, targets, and the labels its metrics compare against."""

    features: sparse.csr_matrix
    targets: np.ndarray  # what the estimator fits (per-residue: only the labelled residues)
    references: np.ndarray  # label_ids as the task's compute_metrics takes them


def design(task: Task, split, letters: str, width: int) -> Design:
    sequences = ["".join(sequence.split()) for sequence in split[SEQUENCE_COLUMN]]
    if not task.labels_per_residue:
        labels = np.asarray(split[LABELS_COLUMN])
        targets = labels.astype(np.float64).reshape(len(labels), -1) if task.numeric_labels else labels
        return Design(one_hot(sequences, letters, width), targets, labels)
    labels = np.concatenate([np.asarray(row, dtype=np.int64) for row in split[LABELS_COLUMN]])
    keep = labels >= 0  # -1: a residue without a label, neither fitted nor scored
    return Design(window_one_hot(sequences, letters)[keep], labels[keep], labels[keep][:, None])


def substitution_map(train_features: sparse.csr_matrix, letters: int, width: int) -> sparse.csr_matrix:
    """(width x letters, letters x letters + 1): the one-hot column of each position and letter to its substitution
    type (the wild-type letter there, the variant's letter) and to the substitution count, where the letter is not
    the wild type's. The wild type is each position's most frequent letter among the training rows (a variant
    library's parent)."""
    counts = np.asarray(train_features.sum(0)).reshape(width, letters)
    wild = counts.argmax(1)
    positions, letter = np.divmod(np.arange(width * letters), letters)
    mutant = letter != wild[positions]
    rows = np.concatenate([np.flatnonzero(mutant)] * 2)
    columns = np.concatenate(
        [wild[positions][mutant] * letters + letter[mutant], np.full(mutant.sum(), letters * letters)]
    )
    return sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(width * letters, letters * letters + 1))


def estimator(task: Task, strength: float):
    from sklearn.linear_model import LogisticRegression, Ridge

    if task.numeric_labels:
        return Ridge(alpha=strength)
    return LogisticRegression(C=strength, max_iter=300)


def outputs(task: Task, model, features, classes: int) -> np.ndarray:
    """What compute_metrics reads as the model's logits: values, or log class probabilities (per residue: (n, 1, C));
    a class the training rows lack gets a vanishing probability."""
    if task.numeric_labels:
        return model.predict(features).reshape(features.shape[0], -1)
    log_probabilities = np.full((features.shape[0], classes), -1e9)
    log_probabilities[:, model.classes_] = model.predict_log_proba(features)
    return log_probabilities[:, None, :] if task.labels_per_residue else log_probabilities


def subsample_rows(split, task: Task, seed: int) -> np.ndarray | None:
    """The training rows the baseline fits: all (None), or a seeded random subset of `MAX_TRAIN_SEQUENCES` sequences
    (per residue: of as many sequences as hold about `MAX_TRAIN_RESIDUES` residues)."""
    if task.labels_per_residue:
        lengths = np.array([len(sequence) for sequence in split[SEQUENCE_COLUMN]])
        limit = max(1, int(MAX_TRAIN_RESIDUES / max(1.0, lengths.mean())))
    else:
        limit = MAX_TRAIN_SEQUENCES
    if len(split) <= limit:
        return None
    return np.random.default_rng(seed).permutation(len(split))[:limit]


@dataclass
class BaselineFit:
    """A fitted baseline: what results.json records, the scikit-learn estimator, its features' layout (column
    `position * len(letters) + letter`, for `width` positions; per residue, a window's), and what it fitted: the
    training rows' targets and its outputs for them."""

    record: dict
    estimator: object
    letters: str
    width: int
    train_targets: np.ndarray
    train_outputs: np.ndarray
    feature_map: sparse.csr_matrix | None = None  # the shared-substitution columns, as a map of the one-hot ones
    prior_scale: float | None = None  # with a prior: what its column was divided by (its training rows' deviation)
    test_outputs: np.ndarray | None = None  # its outputs for the test rows, in their order (as `outputs` gives them)

    @property
    def site_coefficients(self) -> np.ndarray:
        """The fit as one weight per output, position and letter (outputs, width x letters): the one-hot columns'
        coefficients, plus the shared-substitution ones mapped back onto them."""
        coefficients = np.atleast_2d(self.estimator.coef_)
        if self.prior_scale is not None:
            coefficients = coefficients[:, :-1]
        one_hot_columns = self.width * len(self.letters)
        if self.feature_map is None:
            return coefficients
        return coefficients[:, :one_hot_columns] + (self.feature_map @ coefficients[:, one_hot_columns:].T).T

    @property
    def prior_coefficients(self) -> np.ndarray | None:
        """The weight of a prior's score per output (outputs,), on the score's own scale; None without a prior."""
        if self.prior_scale is None:
            return None
        return np.atleast_2d(self.estimator.coef_)[:, -1] / self.prior_scale


@dataclass
class BaselineInputs:
    """Each split of a dataset as the baseline sees it, the number of positions one-hot (`width`), the shared-
    substitution map when asked for (its columns appended to every split's), a prior's column last (divided by
    `prior_scale`), and the training rows fitted."""

    splits: dict[str, Design]
    width: int
    feature_map: sparse.csr_matrix | None
    train_rows: int
    prior_scale: float | None = None


def baseline_inputs(
    task: Task, dataset, letters: str, seed: int, shared_substitutions: bool, prior: dict | None = None
) -> BaselineInputs:
    """With `prior` (each split's prior scores), its column is appended: the augmented model of ProteinGym's
    "+ One-Hot Encodings" baselines and of Hsu et al. (2022)."""
    rows = subsample_rows(dataset["train"], task, seed)
    train = dataset["train"].select(rows) if rows is not None else dataset["train"]
    width = max(len("".join(sequence.split())) for sequence in train[SEQUENCE_COLUMN])
    splits = {
        name: design(task, rows, letters, width)
        for name, rows in (("train", train), *((n, dataset[n]) for n in ("validation", "test") if n in dataset))
    }
    feature_map = substitution_map(splits["train"].features, len(letters), width) if shared_substitutions else None
    if feature_map is not None:
        for split in splits.values():
            split.features = sparse.hstack([split.features, split.features @ feature_map]).tocsr()
    prior_scale = None
    if prior is not None:
        train_scores = prior["train"] if rows is None else prior["train"][rows]
        prior_scale = float(train_scores.std()) or 1.0
        for name, split in splits.items():
            scores = train_scores if name == "train" else prior[name]
            split.features = sparse.hstack([split.features, sparse.csr_matrix(scores[:, None] / prior_scale)]).tocsr()
    return BaselineInputs(splits, width, feature_map, len(train), prior_scale)


def fit_baseline(
    task: Task,
    dataset,
    letters: str,
    names: list[str],
    metric: str,
    seed: int,
    shared_substitutions: bool = False,
    strengths: tuple[float, ...] | None = None,
    prior: dict | None = None,
) -> BaselineFit:
    """Fit the task's one-hot baseline on `dataset["train"]` once per regularisation strength (`strengths`, default
    the task's grid), keep the strength with the best validation `metric`, and score the test split once with it;
    with `shared_substitutions` (sequence tasks), the features of the model's start described in the module's
    docstring; with `prior` (each split's prior scores), a prior's column too."""
    started = time.perf_counter()
    inputs = baseline_inputs(task, dataset, letters, seed, shared_substitutions, prior)
    splits = inputs.splits
    compute_metrics = task.compute_metrics(names)

    def score(model, split: str) -> dict:
        predictions = outputs(task, model, splits[split].features, len(names))
        results = compute_metrics(EvalPrediction(predictions=predictions, label_ids=splits[split].references))
        return defined_metrics(
            {**{key: float(value) for key, value in results.items()}, task.count_key: len(splits[split].references)}
        )

    best = None
    for strength in strengths or (RIDGE_ALPHAS if task.numeric_labels else LOGISTIC_CS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes: the strength is chosen by its validation score
            model = estimator(task, strength).fit(splits["train"].features, splits["train"].targets)
        validation = score(model, "validation")
        if best is None or metric_is_better(metric, validation.get(metric), best[2].get(metric)):
            best = (strength, model, validation)
    strength, model, validation = best
    record = {
        "name": task.baseline_name
        + (" with shared substitution effects" if shared_substitutions else "")
        + (" + prior" if prior is not None else ""),
        "regularisation": {"alpha" if task.numeric_labels else "C": strength},
        "validation": validation,
        "test": score(model, "test") if "test" in splits else None,
        "train_rows": inputs.train_rows,
        "seconds": time.perf_counter() - started,
    }
    train_outputs = outputs(task, model, splits["train"].features, len(names))
    test_outputs = outputs(task, model, splits["test"].features, len(names)) if "test" in splits else None
    return BaselineFit(
        record,
        model,
        letters,
        inputs.width,
        splits["train"].targets,
        train_outputs,
        inputs.feature_map,
        inputs.prior_scale,
        test_outputs,
    )


def leave_one_out_error(
    task: Task, dataset, letters: str, seed: int, shared_substitutions: bool, prior: dict | None = None
) -> tuple[float, float]:
    """Ridge's least exact leave-one-out squared error on the training rows over `RIDGE_ALPHAS` (scikit-learn's
    closed form, one fit), and the alpha that reaches it."""
    from sklearn.linear_model import RidgeCV

    train = baseline_inputs(task, {"train": dataset["train"]}, letters, seed, shared_substitutions, prior).splits[
        "train"
    ]
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit(train.features, train.targets)
    return -float(model.best_score_), float(model.alpha_)


def fit_start(
    task: Task, dataset, letters: str, names: list[str], metric: str, seed: int, prior: dict | None = None
) -> BaselineFit:
    """The linear fit a model with site effects starts from (`lyra-train`). For regression on at most
    `LEAVE_ONE_OUT_MAX_ROWS` training rows, one-hot ridge or ridge with shared substitution effects, whichever
    (with its best alpha) has the smaller exact leave-one-out error on the training rows: a validation split carved
    from a few hundred rows is too small to choose by, and shared effects help a real protein's library but cost a
    library without such structure. Otherwise (classes, or more rows) the shared fit, its strength chosen on
    validation. With `prior` (each split's prior scores), both have its column too. The record says which, and how it
    was chosen."""
    if task.numeric_labels and len(dataset["train"]) <= LEAVE_ONE_OUT_MAX_ROWS:
        errors = {shared: leave_one_out_error(task, dataset, letters, seed, shared, prior) for shared in (False, True)}
        shared = min(errors, key=lambda option: errors[option][0])
        fit = fit_baseline(
            task,
            dataset,
            letters,
            names,
            metric,
            seed,
            shared_substitutions=shared,
            strengths=(errors[shared][1],),
            prior=prior,
        )
        fit.record["chosen_on"] = "leave-one-out on train"
        return fit
    fit = fit_baseline(task, dataset, letters, names, metric, seed, shared_substitutions=True, prior=prior)
    fit.record["chosen_on"] = "validation"
    return fit


def score_prior(task: Task, dataset, names: list[str], prior: dict) -> dict:
    """The prior alone as a zero-shot predictor (its score of each variant, unfitted): its correlations with the labels
    on validation and test (a scale-free score has no squared error to speak of)."""
    compute_metrics = task.compute_metrics(names)
    record = {"name": "the prior alone"}
    for split in ("validation", "test"):
        if split in dataset:
            labels = np.asarray(dataset[split][LABELS_COLUMN], dtype=np.float64).reshape(len(dataset[split]), -1)
            predictions = np.repeat(prior[split][:, None], labels.shape[1], axis=1)
            metrics = compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels))
            correlations = {
                key: float(value) for key, value in metrics.items() if key.startswith(("spearmanr", "pearsonr"))
            }
            record[split] = defined_metrics({**correlations, task.count_key: len(labels)})
    return record
