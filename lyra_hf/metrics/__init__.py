"""Metrics that biologists report, as `evaluate` modules shipped in the package (they load offline), what each one
is (`METRICS`), and `compute_metrics` builders for `transformers.Trainer`. Imports nothing else of lyra_hf: the task
table (`lyra_hf.tasks`) names the metrics and builders each task uses."""

import math
from dataclasses import dataclass
from pathlib import Path

import evaluate
import numpy as np


@dataclass(frozen=True)
class Metric:
    title: str  # as model cards show it
    higher_is_better: bool = True
    undefined_for_constant_labels: bool = False  # a correlation with a constant (or R², which divides by its variance)


METRICS = {
    "spearmanr": Metric("Spearman correlation", undefined_for_constant_labels=True),
    "pearsonr": Metric("Pearson correlation", undefined_for_constant_labels=True),
    "mse": Metric("Mean squared error", higher_is_better=False),
    "r_squared": Metric("R²", undefined_for_constant_labels=True),
    "accuracy": Metric("Accuracy"),
    "f1": Metric("Macro F1"),
    "matthews_correlation": Metric("Matthews correlation"),
    "roc_auc": Metric("AUROC"),
}
METRIC_NAMES = tuple(METRICS)
REGRESSION_METRICS = ("spearmanr", "pearsonr", "mse", "r_squared")
CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews_correlation", "roc_auc")
METRICS_DIR = Path(__file__).parent


def metric_of(key: str) -> Metric:
    """The metric behind a metric key, also a per-target key such as `mse_binding`."""
    base = next((name for name in METRICS if key == name or key.startswith(f"{name}_")), key)
    return METRICS.get(base, Metric(""))


def metric_is_better(metric: str, value: float | None, best: float | None) -> bool:
    """Whether `value` of a validation metric (or a per-target key such as `mse_binding`) beats `best`; an undefined
    value (None: a correlation with constant predictions) beats only another undefined one."""
    if best is None:
        return True
    if value is None:
        return False
    return value > best if metric_of(metric).higher_is_better else value < best


def defined_metrics(metrics: dict) -> dict:
    """`metrics` with the undefined ones (NaN) as None and a `note` saying why, so that results.json stays strict JSON
    and a reader learns the cause: a correlation with constant labels or constant predictions has no value."""
    undefined = [key for key, value in metrics.items() if isinstance(value, float) and not math.isfinite(value)]
    if not undefined:
        return metrics
    note = (
        f"{', '.join(undefined)} undefined (null): the labels or the predictions are constant, and a correlation "
        "with a constant has no value"
    )
    return {**{key: None if key in undefined else value for key, value in metrics.items()}, "note": note}


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
    metrics = {name: load_metric(name) for name in REGRESSION_METRICS}

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predictions = np.asarray(eval_prediction.predictions, dtype=np.float64).reshape(
            len(eval_prediction.label_ids), -1
        )
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
    metrics = {name: load_metric(name) for name in CLASSIFICATION_METRICS}

    def compute_metrics(eval_prediction) -> dict[str, float]:
        probabilities = _softmax(np.asarray(eval_prediction.predictions, dtype=np.float64))
        return _classification_scores(probabilities, np.asarray(eval_prediction.label_ids), metrics)

    return compute_metrics


def token_classification_metrics():
    """`compute_metrics` for per-residue labels: the classification metrics over every position whose label is not
    -100 (padding and ignored positions)."""
    metrics = {name: load_metric(name) for name in CLASSIFICATION_METRICS}

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = np.asarray(eval_prediction.predictions, dtype=np.float64)
        labels = np.asarray(eval_prediction.label_ids)
        keep = labels != -100
        return _classification_scores(_softmax(logits[keep]), labels[keep], metrics)

    return compute_metrics


__all__ = [
    "CLASSIFICATION_METRICS",
    "METRICS",
    "METRIC_NAMES",
    "REGRESSION_METRICS",
    "Metric",
    "defined_metrics",
    "metric_is_better",
    "metric_of",
    "load_metric",
    "regression_metrics",
    "classification_metrics",
    "token_classification_metrics",
]
