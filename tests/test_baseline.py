"""The one-hot baseline (lyra_hf.baseline) against scikit-learn fitted directly on the same splits, and beside every
lyra-train result."""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import OneHotEncoder

from lyra_hf.baseline import LOGISTIC_CS, RIDGE_ALPHAS, WINDOW, fit_baseline, fit_start
from lyra_hf.data import load_sequence_dataset
from lyra_hf.tasks import TASKS
from lyra_hf.train import main


LETTERS = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def variant_files(tmp_path, rows=(300, 80, 80), classes=False, seed=0, saturating=False):
    """Fixed-length variants of one wild type with additive effects and noise, as train, validation and test CSVs;
    `saturating` passes the sum through a logistic curve, as global-epistasis models see fitness."""
    rng = np.random.default_rng(seed)
    wild = rng.choice(list(LETTERS), 12)
    effects = rng.normal(size=(12, 20))
    paths = []
    for name, count in zip(("train", "validation", "test"), rows):
        lines = ["sequence,label"]
        for _ in range(count):
            sequence = wild.copy()
            for position in rng.choice(12, 3, replace=False):
                sequence[position] = rng.choice(list(LETTERS))
            value = sum(
                effects[position, LETTERS.index(letter)] for position, letter in enumerate(sequence)
            ) + rng.normal(scale=0.5)
            value = 4 / (1 + np.exp(-value)) if saturating else value
            label = ("high" if value > 0.5 else "low" if value < -0.5 else "mid") if classes else f"{value:.5f}"
            lines.append(f"{''.join(sequence)},{label}")
        paths.append(tmp_path / f"{name}.csv")
        paths[-1].write_text("\n".join(lines) + "\n")
    return paths


def position_columns(split):
    return np.array([list(sequence) for sequence in split["sequence"]])


def test_ridge_baseline_equals_scikit_learn_fitted_on_the_same_split(tmp_path):
    train, validation, test = variant_files(tmp_path)
    dataset = load_sequence_dataset(train, validation_file=validation, test_file=test)
    result = fit_baseline(TASKS["regression"], dataset, LETTERS + "X", ["label"], "spearmanr", seed=0).record

    encoder = OneHotEncoder(handle_unknown="ignore").fit(position_columns(dataset["train"]))
    features = {split: encoder.transform(position_columns(dataset[split])) for split in dataset}
    labels = {split: np.array(dataset[split]["labels"])[:, 0] for split in dataset}
    validation_scores = {
        alpha: spearmanr(
            Ridge(alpha=alpha).fit(features["train"], labels["train"]).predict(features["validation"]),
            labels["validation"],
        )[0]
        for alpha in RIDGE_ALPHAS
    }
    chosen = max(validation_scores, key=validation_scores.get)
    assert result["regularisation"] == {"alpha": chosen}
    assert result["validation"]["spearmanr"] == pytest.approx(validation_scores[chosen], abs=1e-9)
    predictions = Ridge(alpha=chosen).fit(features["train"], labels["train"]).predict(features["test"])
    assert result["test"]["spearmanr"] == pytest.approx(spearmanr(predictions, labels["test"])[0], abs=1e-9)
    assert result["name"] == "one-hot ridge" and result["train_rows"] == 300


def test_logistic_baseline_equals_scikit_learn_fitted_on_the_same_split(tmp_path):
    train, validation, test = variant_files(tmp_path, classes=True)
    dataset = load_sequence_dataset(train, validation_file=validation, test_file=test, task="classification")
    names = dataset["train"].features["labels"].names
    result = fit_baseline(TASKS["classification"], dataset, LETTERS + "X", names, "f1", seed=0).record

    encoder = OneHotEncoder(handle_unknown="ignore").fit(position_columns(dataset["train"]))
    features = {split: encoder.transform(position_columns(dataset[split])) for split in dataset}
    labels = {split: np.array(dataset[split]["labels"]) for split in dataset}
    models = {C: LogisticRegression(C=C, max_iter=300).fit(features["train"], labels["train"]) for C in LOGISTIC_CS}
    scores = {
        C: f1_score(labels["validation"], model.predict(features["validation"]), average="macro")
        for C, model in models.items()
    }
    chosen = max(scores, key=scores.get)
    assert result["regularisation"] == {"C": chosen}
    assert result["test"]["f1"] == pytest.approx(
        f1_score(labels["test"], models[chosen].predict(features["test"]), average="macro"), abs=1e-9
    )
    assert result["test"]["accuracy"] == pytest.approx(
        accuracy_score(labels["test"], models[chosen].predict(features["test"])), abs=1e-9
    )


def reference_windows(sequences: list[str], letters: str) -> np.ndarray:
    """Each residue's neighbourhood, one column per offset: its letter, or '>' beyond either end of the sequence."""
    rows = []
    for sequence in sequences:
        for position in range(len(sequence)):
            rows.append(
                [
                    sequence[position + offset] if 0 <= position + offset < len(sequence) else ">"
                    for offset in range(-WINDOW, WINDOW + 1)
                ]
            )
    return np.array(rows)


def test_per_residue_baseline_is_a_logistic_regression_on_a_window_of_each_residue(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for name, count in (("train", 60), ("validation", 15), ("test", 15)):
        for _ in range(count):
            sequence = "".join(rng.choice(list("ACDEKLH"), rng.integers(8, 20)))
            labels = "".join(
                "H" if letter in "AEL" else "X" if letter == "C" else "E" if letter in "KH" else "C"
                for letter in sequence
            )
            rows.append(f"{sequence},{labels},{'test' if name == 'test' else 'train'},{name == 'validation'}")
    path = tmp_path / "residues.csv"
    path.write_text("sequence,ss,split,validation\n" + "\n".join(rows) + "\n")
    common = {"label_columns": "ss", "task": "token-classification", "ignore_label_characters": "X"}
    dataset = load_sequence_dataset(path, split_column="split", validation_column="validation", **common)
    names = dataset["train"].features["labels"].feature.names
    result = fit_baseline(TASKS["token-classification"], dataset, LETTERS + "X", names, "accuracy", seed=0).record

    def design(split):
        windows = reference_windows(dataset[split]["sequence"], LETTERS)
        labels = np.concatenate([np.array(row) for row in dataset[split]["labels"]])
        return windows[labels >= 0], labels[labels >= 0]

    encoder = OneHotEncoder(handle_unknown="ignore").fit(design("train")[0])
    (train_x, train_y), (test_x, test_y) = ((encoder.transform(x), y) for x, y in (design("train"), design("test")))
    model = LogisticRegression(C=result["regularisation"]["C"], max_iter=300).fit(train_x, train_y)
    assert result["test"]["accuracy"] == pytest.approx(accuracy_score(test_y, model.predict(test_x)), abs=1e-9)
    assert result["test"]["num_residues"] == len(test_y) and result["name"] == "one-hot window logistic regression"


def test_every_run_reports_its_baseline_and_an_ensemble_fits_it_once(tmp_path, capsys):
    train, validation, test = variant_files(tmp_path)
    flags = [
        "--hidden-size",
        "16",
        "--state-size",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--quiet",
        "--num-processes",
        "1",
    ]
    flags += ["--train-file", str(train), "--validation-file", str(validation), "--test-file", str(test)]
    assert main([*flags, "--output-dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    shown = f"(one-hot ridge {results['baseline']['test']['spearmanr']:.4f})"
    assert shown in capsys.readouterr().out
    assert "one-hot ridge" in (tmp_path / "run" / "best" / "README.md").read_text()

    assert main([*flags, "--output-dir", str(tmp_path / "plain"), "--no-baseline"]) == 0
    assert "baseline" not in json.loads((tmp_path / "plain" / "results.json").read_text())
    assert main([*flags, "--output-dir", str(tmp_path / "ensemble"), "--ensemble", "2"]) == 0
    ensemble = json.loads((tmp_path / "ensemble" / "results.json").read_text())
    assert ensemble["baseline"]["test"] == results["baseline"]["test"]
    assert all(
        "baseline" not in json.loads((tmp_path / "ensemble" / f"member_{index}" / "results.json").read_text())
        for index in range(2)
    )


@pytest.mark.parametrize("shared_substitutions", [False, True])
def test_a_model_started_from_the_baseline_predicts_what_the_baseline_predicts(tmp_path, shared_substitutions):
    """`--site-effects` starts the model's per-position term at a linear fit and its pooled head at the intercept:
    before training, the model's predictions are the fit's, for the one-hot fit and for the fit with shared
    substitution effects (whose substitution-type and count columns fold into the per-position weights)."""
    import torch
    from scipy import sparse

    from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
    from lyra_hf.baseline import one_hot
    from lyra_hf.training.setup import start_from_baseline

    train, validation, test = variant_files(tmp_path)
    dataset = load_sequence_dataset(train, validation_file=validation, test_file=test)
    tokenizer = LyraTokenizer()
    fit = fit_baseline(
        TASKS["regression"],
        dataset,
        tokenizer.letters,
        ["label"],
        "spearmanr",
        seed=0,
        shared_substitutions=shared_substitutions,
    )
    model = LyraForSequenceRegression(
        LyraConfig(hidden_size=16, state_size=8, vocab_size=len(tokenizer), site_effects_length=12)
    ).eval()
    start_from_baseline(model, fit, tokenizer)
    with torch.no_grad():
        predicted = model(**tokenizer(list(dataset["test"]["sequence"]), return_tensors="pt")).logits[:, 0].numpy()
    features = one_hot(dataset["test"]["sequence"], tokenizer.letters, fit.width)
    if shared_substitutions:
        features = sparse.hstack([features, features @ fit.feature_map]).tocsr()
    expected = fit.estimator.predict(features)
    assert np.abs(predicted - expected.reshape(-1)).max() < 1e-4 * np.abs(expected).max()


def substitution_type_library(tmp_path, rows=(120, 80, 400)):
    """Variants of a wild type over few letters, so that each substitution type occurs at about 4 of its 12
    positions, whose effects depend on the substitution type alone and on their count; and the wild type."""
    rng = np.random.default_rng(1)
    wild = rng.choice(list("AGL"), 12)
    type_effects = rng.normal(size=(20, 20))
    for name, count in zip(("train", "validation", "test"), rows):
        lines = ["sequence,label"]
        for _ in range(count):
            sequence = wild.copy()
            sequence[rng.choice(12, 3, replace=False)] = rng.choice(list(LETTERS), 3)
            value = (
                sum(type_effects[LETTERS.index(w), LETTERS.index(v)] for w, v in zip(wild, sequence) if w != v)
                - (sequence != wild).sum()
            )
            lines.append(f"{''.join(sequence)},{value + rng.normal(scale=0.2):.5f}")
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return load_sequence_dataset(
        tmp_path / "train.csv", validation_file=tmp_path / "validation.csv", test_file=tmp_path / "test.csv"
    ), wild


def test_training_gives_the_started_head_back_so_the_network_learns_from_the_first_step(tmp_path):
    """A model started from the linear fit has its pooled head zeroed, so that epoch 0 is the fit itself; a zero
    head passes the network no gradient. `release_head`, which training calls once epoch 0 is validated, restores the
    head's initial weights (those `start_model` returns), and the network's first gradient is then not zero."""
    from types import SimpleNamespace

    import torch
    from accelerate import Accelerator

    from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
    from lyra_hf.training.components import Components
    from lyra_hf.training.loop import release_head
    from lyra_hf.training.setup import start_model

    train, validation, test = variant_files(tmp_path)
    dataset = load_sequence_dataset(train, validation_file=validation, test_file=test)
    tokenizer = LyraTokenizer()
    torch.manual_seed(0)
    model = LyraForSequenceRegression(
        LyraConfig(hidden_size=16, state_size=8, vocab_size=len(tokenizer), site_effects_length=12, dropout=0.0)
    )
    initial = model.score.weight.detach().clone()
    arguments = (TASKS["regression"], dataset, tokenizer.letters, ["label"], "spearmanr", 0)
    start, head = start_model(model, arguments, tokenizer, Components(12, False, {}))
    assert start is not None and torch.equal(head, initial) and not model.score.weight.any()
    batch = tokenizer(list(dataset["train"]["sequence"][:32]), return_tensors="pt")
    labels = torch.tensor(dataset["train"]["labels"][:32])

    def embedding_gradient() -> torch.Tensor:
        model.zero_grad()
        model(**batch, labels=labels).loss.backward()
        return model.lyra.embeddings.weight.grad.abs().sum()

    assert embedding_gradient() == 0
    release_head(Accelerator(cpu=True), SimpleNamespace(model=model, start_head=head))
    assert torch.equal(model.score.weight, initial) and embedding_gradient() > 0


def test_shared_substitution_effects_are_the_substitution_types_and_the_count_of_each_variant(tmp_path):
    """The fit with shared substitutions sees, besides the one-hot columns, how often each variant carries each
    substitution type (the library's most frequent letter at a position, to another) and how many substitutions it
    carries, counted here from the sequences; and where effects depend on the type alone, it beats one-hot ridge."""
    from lyra_hf.baseline import one_hot, substitution_map

    dataset, wild = substitution_type_library(tmp_path)
    features = one_hot(dataset["train"]["sequence"], LETTERS, 12)
    counted = features @ substitution_map(features, len(LETTERS), 12)
    for row, sequence in enumerate(dataset["train"]["sequence"]):
        expected = np.zeros(len(LETTERS) ** 2 + 1)
        for w, v in zip(wild, sequence):
            if w != v:
                expected[LETTERS.index(w) * len(LETTERS) + LETTERS.index(v)] += 1
                expected[-1] += 1
        assert np.array_equal(counted[row].toarray()[0], expected)
    plain, shared = (
        fit_baseline(
            TASKS["regression"], dataset, LETTERS, ["label"], "spearmanr", seed=0, shared_substitutions=flag
        ).record
        for flag in (False, True)
    )
    assert shared["test"]["spearmanr"] > plain["test"]["spearmanr"] + 0.05


def test_the_global_epistasis_curve_starts_as_the_least_squares_curve_through_the_baselines_predictions(tmp_path):
    """`start_from_baseline` on a model with `global_epistasis` puts the curve through the ridge fit's training
    predictions: its squared error is scipy's `curve_fit` of the same four-parameter logistic curve (an independent
    least-squares solver), below the straight line's, and the predictions keep the ridge fit's ranking."""
    import torch
    from scipy.optimize import curve_fit

    from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
    from lyra_hf.baseline import one_hot
    from lyra_hf.training.setup import start_from_baseline

    train, validation, test = variant_files(tmp_path, rows=(600, 80, 80), saturating=True)
    dataset = load_sequence_dataset(train, validation_file=validation, test_file=test)
    tokenizer = LyraTokenizer()
    fit = fit_baseline(TASKS["regression"], dataset, tokenizer.letters, ["label"], "spearmanr", seed=0)
    config = LyraConfig(
        hidden_size=16, state_size=8, vocab_size=len(tokenizer), site_effects_length=12, global_epistasis=True
    )
    model = LyraForSequenceRegression(config).eval()
    start_from_baseline(model, fit, tokenizer)
    latent, targets = fit.train_outputs[:, 0], fit.train_targets[:, 0]

    def logistic(z, lower, span, center, slope):
        return lower + span * (1 / (1 + np.exp(-slope * (z - center))))

    reference, _ = curve_fit(
        logistic,
        latent,
        targets,
        p0=(targets.min(), np.ptp(targets), np.median(latent), 4 / np.ptp(targets)),
        maxfev=20_000,
    )
    with torch.no_grad():
        started = model.global_epistasis(torch.as_tensor(latent, dtype=torch.float32)[:, None])[:, 0].numpy()
    started_error, reference_error = (
        np.mean((started - targets) ** 2),
        np.mean((logistic(latent, *reference) - targets) ** 2),
    )
    assert started_error <= reference_error * 1.01
    assert started_error < 0.9 * np.mean((latent - targets) ** 2)
    with torch.no_grad():
        predicted = model(**tokenizer(list(dataset["test"]["sequence"]), return_tensors="pt")).logits[:, 0].numpy()
    ridge = fit.estimator.predict(one_hot(dataset["test"]["sequence"], tokenizer.letters, fit.width))
    assert spearmanr(predicted, ridge).correlation == pytest.approx(1.0)


def test_a_variant_library_trains_from_the_baseline_and_validation_may_keep_it(tmp_path):
    """Fixed-length sequences turn the site effects on (`--site-effects auto`): the model starts as the linear fit
    `fit_start` chooses, which validation scores as epoch 0, the same as that fit's own validation score, and which
    results.json names;
    sequences of several lengths keep the authors' model."""
    train, validation, test = variant_files(tmp_path)
    flags = [
        "--hidden-size",
        "16",
        "--state-size",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--quiet",
        "--num-processes",
        "1",
    ]
    flags += ["--train-file", str(train), "--validation-file", str(validation), "--test-file", str(test)]
    assert main([*flags, "--output-dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [entry["epoch"] for entry in results["history"]] == [0, 1, 2] and results["history"][0]["train_loss"] is None
    start = fit_start(
        TASKS["regression"],
        load_sequence_dataset(train, validation_file=validation, test_file=test),
        LETTERS + "X",
        ["label"],
        "spearmanr",
        seed=0,
    )
    assert results["history"][0]["spearmanr"] == pytest.approx(start.record["validation"]["spearmanr"], abs=1e-6)
    assert results["start"] == {key: start.record[key] for key in ("name", "regularisation", "chosen_on")}
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert (
        config["site_effects_length"] == 12 and config["global_epistasis"]
    )  # regression with site effects: the curve too

    lines = train.read_text().splitlines()
    train.write_text(
        "\n".join(
            [lines[0], *(line.replace(",", "A,", 1) if index % 2 else line for index, line in enumerate(lines[1:]))]
        )
        + "\n"
    )
    assert main([*flags, "--output-dir", str(tmp_path / "lengths")]) == 0
    results = json.loads((tmp_path / "lengths" / "results.json").read_text())
    assert results["history"][0]["epoch"] == 1
    assert json.loads((tmp_path / "lengths" / "best" / "config.json").read_text()).get("site_effects_length", 0) == 0


def leave_one_out_by_refitting(features, targets, alpha: float) -> float:
    """The mean squared error of ridge refitted without each training row in turn, predicting that row."""
    errors = []
    for row in range(features.shape[0]):
        keep = np.arange(features.shape[0]) != row
        model = Ridge(alpha=alpha).fit(features[keep], targets[keep])
        errors.append(float(((model.predict(features[row]) - targets[row]) ** 2).sum()))
    return float(np.mean(errors))


@pytest.mark.parametrize("library", ["substitution types", "per-site effects"])
def test_the_start_is_the_fit_with_the_least_leave_one_out_error(tmp_path, library):
    """`fit_start` on a small regression library: of one-hot ridge and ridge with shared substitution effects, each at
    every alpha, the start is the one whose leave-one-out error (refitted here row by row) is least, which is the
    shared fit where effects follow the substitution type and the one-hot fit where each site's letters have their
    own effects (which shared columns can only blur)."""
    from scipy import sparse

    from lyra_hf.baseline import baseline_inputs

    if library == "substitution types":
        dataset, _ = substitution_type_library(tmp_path, rows=(60, 40, 40))
    else:
        dataset = load_sequence_dataset(*variant_files(tmp_path, rows=(60, 40, 40)))
    task = TASKS["regression"]
    errors = {}
    for shared in (False, True):
        train = baseline_inputs(task, dataset, LETTERS, 0, shared).splits["train"]
        for alpha in RIDGE_ALPHAS:
            errors[shared, alpha] = leave_one_out_by_refitting(sparse.csr_matrix(train.features), train.targets, alpha)
    shared, alpha = min(errors, key=errors.get)
    start = fit_start(task, dataset, LETTERS, ["label"], "spearmanr", seed=0).record
    assert start["chosen_on"] == "leave-one-out on train" and start["regularisation"] == {"alpha": alpha}
    assert start["name"].endswith("with shared substitution effects") == shared == (library == "substitution types")


def test_above_the_leave_one_out_limit_the_start_is_the_shared_fit_chosen_on_validation(tmp_path, monkeypatch):
    """Beyond `LEAVE_ONE_OUT_MAX_ROWS` training rows (lowered here), the start is the shared fit, its alpha the one
    with the best validation metric, as for the baseline."""
    monkeypatch.setattr("lyra_hf.baseline.LEAVE_ONE_OUT_MAX_ROWS", 59)
    dataset = load_sequence_dataset(*variant_files(tmp_path, rows=(60, 40, 40)))
    start = fit_start(TASKS["regression"], dataset, LETTERS, ["label"], "spearmanr", seed=0).record
    shared = fit_baseline(
        TASKS["regression"], dataset, LETTERS, ["label"], "spearmanr", seed=0, shared_substitutions=True
    ).record
    assert (
        start["chosen_on"] == "validation"
        and start["name"] == shared["name"]
        and start["regularisation"] == shared["regularisation"]
    )
