"""Metrics that biologists report, as `evaluate` modules shipped in the package (they load offline), and
`compute_metrics` builders for `transformers.Trainer`."""

from pathlib import Path

import evaluate
import numpy as np

from ..tasks import METRICS, TASKS


METRICS_DIR = Path(__file__).parent
METRIC_NAMES = tuple(METRICS)


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load one of `METRIC_NAMES` from its module inside the package (`evaluate.load("spearmanr")` would fetch the
    script from the Hub)."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRICS)}.")
    return evaluate.load(str(METRICS_DIR / name))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def regression_metrics(target_names: list[str] | None = None):
    """`compute_metrics` for regression: Spearman, Pearson, MSE and R² per target; with several targets, each key is
    suffixed with the target's name and the unsuffixed keys are the means over targets."""
    metrics = {name: load_metric(name) for name in TASKS["regression"].metric_names}

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predictions = np.asarray(eval_prediction.predictions, dtype=np.float64).reshape(len(eval_prediction.label_ids), -1)
        references = np.asarray(eval_prediction.label_ids, dtype=np.float64).reshape(predictions.shape)
        names = target_names or [str(index) for index in range(predictions.shape[1])]
        results = {}
        for name, metric in metrics.items():
            per_target = [
                metric.compute(predictions=predictions[:, column], references=references[:, column])[name]
                for column in range(predictions.shape[1])
            ]
            results[name] = float(np.mean(per_target))
            if len(per_target) > 1:
                results.update({f"{name}_{target}": value for target, value in zip(names, per_target)})
        return results

    return compute_metrics


def _classification_scores(probabilities: np.ndarray, references: np.ndarray, metrics: dict) -> dict[str, float]:
    predictions = probabilities.argmax(-1)
    results = {
        name: metric.compute(predictions=predictions, references=references)[name]
        for name, metric in metrics.items()
        if name != "roc_auc"
    }
    # AUROC needs every class among the references; it is left out rather than made up when one is missing.
    if len(np.unique(references)) == probabilities.shape[-1]:
        scores = probabilities if probabilities.shape[-1] > 2 else probabilities[:, 1]
        results["roc_auc"] = metrics["roc_auc"].compute(predictions=scores, references=references)["roc_auc"]
    return results


def classification_metrics():
    """`compute_metrics` for single-label sequence classification: accuracy, macro-F1, MCC and AUROC."""
    metrics = {name: load_metric(name) for name in TASKS["classification"].metric_names}

    def compute_metrics(eval_prediction) -> dict[str, float]:
        probabilities = _softmax(np.asarray(eval_prediction.predictions, dtype=np.float64))
        return _classification_scores(probabilities, np.asarray(eval_prediction.label_ids), metrics)

    return compute_metrics


def token_classification_metrics():
    """`compute_metrics` for per-residue labels: the classification metrics over every position whose label is not
    -100 (padding and ignored positions)."""
    metrics = {name: load_metric(name) for name in TASKS["token-classification"].metric_names}

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = np.asarray(eval_prediction.predictions, dtype=np.float64)
        labels = np.asarray(eval_prediction.label_ids)
        keep = labels != -100
        return _classification_scores(_softmax(logits[keep]), labels[keep], metrics)

    return compute_metrics


def build_compute_metrics(task: str, target_names: list[str] | None = None):
    """`compute_metrics` for a task of `lyra_hf.tasks.TASKS` (`target_names`: the regression targets)."""
    if task == "regression":
        return regression_metrics(target_names)
    return classification_metrics() if task == "classification" else token_classification_metrics()


__all__ = [
    "METRIC_NAMES",
    "build_compute_metrics",
    "load_metric",
    "regression_metrics",
    "classification_metrics",
    "token_classification_metrics",
]
