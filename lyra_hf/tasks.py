"""The tasks lyra-hf trains and runs, one row each: which head, which Auto class loads it, how the Hub tags it, which
metrics score it and which one picks the best epoch, and how its batches are collated. Every command and module reads
tasks and metric names from here.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import datasets
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
)

from .metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    classification_metrics,
    regression_metrics,
    token_classification_metrics,
)
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
    numeric_labels: bool  # real-valued targets (several allowed), rather than class names
    labels_per_residue: bool  # one label per residue (a head at every position), rather than one per sequence
    baseline_name: str  # the one-hot baseline fitted beside each run (lyra_hf.baseline), as results and cards name it
    # LyraConfig values a new model of this task gets unless the user's flags or --config JSON say otherwise, chosen
    # by measurement (BENCHMARKS.md, "Defaults per task").
    model_defaults: dict = field(default_factory=dict)

    def collator(self, tokenizer, pad_to_multiple_of: int | None = None):
        """Pads a batch per batch; per-residue labels are padded with -100 (no loss, not scored)."""
        return self.collator_class(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def compute_metrics(self, target_names: list[str] | None = None):
        """`compute_metrics` for `transformers.Trainer` and lyra-train (`target_names`: the regression targets)."""
        return self.metrics_builder(target_names)

    def metric_keys(self, target_names: list[str] | None = None) -> list[str]:
        """Every key its `compute_metrics` may return: with several regression targets, also one per target."""
        keys = list(self.metric_names)
        if self.numeric_labels and target_names and len(target_names) > 1:
            keys += [f"{metric}_{target}" for metric in self.metric_names for target in target_names]
        return keys

    @property
    def count_key(self) -> str:
        """The key under which evaluation results count what was scored."""
        return "num_residues" if self.labels_per_residue else "num_samples"

    def combine_logits(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """One output from several models' logits (an ensemble's members): the mean of values; for classifiers the log
        of
        the mean class probabilities (its softmax is that mean). One model's logits are returned unchanged."""
        if len(logits) == 1:
            return logits[0]
        stacked = torch.stack(logits)
        return stacked.mean(0) if self.numeric_labels else stacked.softmax(-1).mean(0).log()

    def label_names(self, values, ignored: set[str] = frozenset()) -> list[str] | None:
        """The class names that a label column's `values` hold, sorted (None for real-valued targets): each value is a
        class, or for per-residue labels each character of a value that is not in `ignored`."""
        if self.numeric_labels:
            return None
        if self.labels_per_residue:
            return sorted({character for value in values for character in "".join(str(value).split())} - set(ignored))
        return sorted({str(value) for value in values})

    def label_feature(self, names: list[str] | None):
        """The `datasets` feature of the `labels` column: floats, a class, or a class per residue."""
        if self.numeric_labels:
            return datasets.Sequence(datasets.Value("float32"))
        classes = datasets.ClassLabel(names=names)
        return datasets.Sequence(classes) if self.labels_per_residue else classes

    def describe_head(self, names: list[str], config) -> tuple[str, str]:
        """What the model predicts and with which head, as the model card says it."""
        sites = getattr(config, "site_effects_length", 0)
        site_effects = (
            f", plus a weight per position and letter of the first {sites} positions (site effects)" if sites else ""
        )
        if self.numeric_labels:
            curve = (
                ", through a learnt monotone global-epistasis curve"
                if getattr(config, "global_epistasis", False)
                else ""
            )
            return (
                f"{', '.join(names)} (regression)",
                f"masked {config.pooling} pooling and a linear head with {config.num_labels} "
                f"output(s){site_effects}{curve}",
            )
        if self.labels_per_residue:
            return (
                f"a label per residue ({', '.join(names)})",
                f"a linear classifier at every position over {config.num_labels} labels",
            )
        return (
            f"the class ({', '.join(names)})",
            f"masked {config.pooling} pooling and a linear classifier over {config.num_labels} classes{site_effects}",
        )


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
            numeric_labels=True,
            labels_per_residue=False,
            baseline_name="one-hot ridge",
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
            numeric_labels=False,
            labels_per_residue=False,
            baseline_name="one-hot logistic regression",
        ),
        Task(
            "token-classification",
            LyraForTokenClassification,
            AutoModelForTokenClassification,
            None,
            "token-classification",
            "Per-residue classification",
            CLASSIFICATION_METRICS,
            # Per-residue accuracy over scored residues: Q3 or Q8 for secondary structure, the field's headline.
            "accuracy",
            lambda target_names: token_classification_metrics(),
            DataCollatorForTokenClassification,
            numeric_labels=False,
            labels_per_residue=True,
            baseline_name="one-hot window logistic regression",
            # A residue's class depends on both its neighbours, and causal S4D layers see only the left ones.
            model_defaults={"bidirectional": True},
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
