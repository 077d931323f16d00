"""The tasks lyra-hf trains and runs, one row each: which head, which Auto class loads it, how the Hub tags it, which
metrics score it and which one picks the best epoch, and how its batches are collated. Every command and module reads
tasks and metric names from here.
"""

from collections.abc import Callable
from dataclasses import dataclass

from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
)

from .metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, classification_metrics, regression_metrics, token_classification_metrics
from .modeling_lyra import LyraForSequenceClassification, LyraForSequenceRegression, LyraForTokenClassification


@dataclass(frozen=True)
class Task:
    """One row of `TASKS`. `model_class` is what lyra-train builds, `auto_class` what loads the checkpoint anywhere,
    and `problem_type` what its config records (the sequence head's loss and the pipelines' output follow it);
    `pipeline_tag` and `title` go on the model card; `metric_names` are computed on validation and test, and
    `default_metric` picks the best epoch unless the user names another."""

    name: str
    model_class: type
    auto_class: type
    problem_type: str | None
    pipeline_tag: str
    title: str
    metric_names: tuple[str, ...]
    default_metric: str
    metrics_builder: Callable  # (target_names) -> compute_metrics; lyra_hf.metrics' builder for this task
    collator_class: type
    scores_whole_sequences: bool

    def collator(self, tokenizer, pad_to_multiple_of: int | None = None):
        """Pads a batch per batch; per-residue labels are padded with -100 (no loss, not scored)."""
        return self.collator_class(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def compute_metrics(self, target_names: list[str] | None = None):
        """`compute_metrics` for `transformers.Trainer` and lyra-train (`target_names`: the regression targets)."""
        return self.metrics_builder(target_names)

    def metric_keys(self, target_names: list[str] | None = None) -> list[str]:
        """Every key its `compute_metrics` may return: with several regression targets, also one per target."""
        keys = list(self.metric_names)
        if self.name == "regression" and target_names and len(target_names) > 1:
            keys += [f"{metric}_{target}" for metric in self.metric_names for target in target_names]
        return keys


TASKS = {
    task.name: task
    for task in (
        Task(
            "regression",
            LyraForSequenceRegression,
            AutoModelForSequenceClassification,
            "regression",
            "text-classification",
            "Sequence regression",
            REGRESSION_METRICS,
            "spearmanr",
            regression_metrics,
            DataCollatorWithPadding,
            scores_whole_sequences=True,
        ),
        Task(
            "classification",
            LyraForSequenceClassification,
            AutoModelForSequenceClassification,
            "single_label_classification",
            "text-classification",
            "Sequence classification",
            CLASSIFICATION_METRICS,
            "f1",
            lambda target_names: classification_metrics(),
            DataCollatorWithPadding,
            scores_whole_sequences=True,
        ),
        Task(
            "token-classification",
            LyraForTokenClassification,
            AutoModelForTokenClassification,
            None,
            "token-classification",
            "Per-residue classification",
            CLASSIFICATION_METRICS,
            "accuracy",  # per-residue accuracy over scored residues: Q3 or Q8 for secondary structure, the field's headline
            lambda target_names: token_classification_metrics(),
            DataCollatorForTokenClassification,
            scores_whole_sequences=False,
        ),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; one of {', '.join(TASKS)}.")
    return TASKS[name]


def task_of(config, architecture: str | None = None) -> Task:
    """The task a model was saved for: from `config.architectures` (or `architecture`, the class name of a model not
    saved yet) and `config.problem_type`. A bare encoder (`LyraModel`) has no task and is refused."""
    names = list(getattr(config, "architectures", None) or []) or ([architecture] if architecture else [])
    if any(name.endswith("ForTokenClassification") for name in names):
        return TASKS["token-classification"]
    if names and not any(name.endswith(("ForSequenceClassification", "ForSequenceRegression")) for name in names):
        raise ValueError(f"The checkpoint holds {names}: a bare encoder without a prediction head.")
    return TASKS["regression" if config.problem_type == "regression" else "classification"]


__all__ = ["TASKS", "Task", "get_task", "task_of"]
