import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error, r2_score, roc_auc_score
from transformers import EvalPrediction

from lyra_hf.metrics import (
    METRIC_NAMES,
    classification_metrics,
    load_metric,
    regression_metrics,
    token_classification_metrics,
)


rng = np.random.default_rng(0)
x, y = rng.normal(size=200), rng.normal(size=200)
classes, predicted = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
probabilities = rng.dirichlet(np.ones(4), size=200)


@pytest.mark.parametrize(
    "name, predictions, references, expected",
    [
        ("spearmanr", x, y, spearmanr(y, x)[0]),
        ("pearsonr", x, y, pearsonr(y, x)[0]),
        ("mse", x, y, mean_squared_error(y, x)),
        ("r_squared", x, y, r2_score(y, x)),
        ("accuracy", predicted, classes, accuracy_score(classes, predicted)),
        ("f1", predicted, classes, f1_score(classes, predicted, average="macro")),
        ("matthews_correlation", predicted, classes, matthews_corrcoef(classes, predicted)),
        ("roc_auc", probabilities, classes, roc_auc_score(classes, probabilities, multi_class="ovr")),
        ("roc_auc", x, (y > 0).astype(int), roc_auc_score((y > 0).astype(int), x)),
    ],
)
def test_metric_matches_scipy_and_sklearn(name, predictions, references, expected):
    result = load_metric(name).compute(predictions=predictions, references=references)[name]
    assert result == pytest.approx(expected, abs=1e-6)


def test_metrics_load_offline_in_a_fresh_process(tmp_path):
    code = "from lyra_hf.metrics import METRIC_NAMES, load_metric\nfor n in METRIC_NAMES: load_metric(n)\nprint('OK')"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.stdout.strip() == "OK", result.stderr[-2000:]
    assert len(METRIC_NAMES) == 8


def test_compute_metrics_builders():
    regression = regression_metrics(["a", "b"])(
        EvalPrediction(predictions=np.stack([x, y], 1), label_ids=np.stack([y, x], 1))
    )
    assert regression["spearmanr_a"] == pytest.approx(spearmanr(y, x)[0])
    assert regression["spearmanr"] == pytest.approx(spearmanr(y, x)[0])

    logits = np.log(probabilities)
    classification = classification_metrics()(EvalPrediction(predictions=logits, label_ids=classes))
    assert classification["accuracy"] == pytest.approx(accuracy_score(classes, probabilities.argmax(1)))
    assert classification["roc_auc"] == pytest.approx(roc_auc_score(classes, probabilities, multi_class="ovr"))

    token_logits = np.log(probabilities).reshape(20, 10, 4)
    token_labels = classes.reshape(20, 10).copy()
    token_labels[:, 7:] = -100
    token = token_classification_metrics()(EvalPrediction(predictions=token_logits, label_ids=token_labels))
    keep = token_labels != -100
    assert token["f1"] == pytest.approx(f1_score(token_labels[keep], token_logits.argmax(-1)[keep], average="macro"))
