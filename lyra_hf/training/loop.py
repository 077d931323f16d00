"""The training loop: `fit` runs `train_one_epoch` and `evaluate` epoch after epoch, keeps the best epoch's model and
checkpoints each epoch; `evaluate` also scores the test split and ensembles."""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import EvalPrediction

from ..data import tokenize_dataset
from ..metrics import defined_metrics, metric_is_better
from ..tasks import TASKS, Task
from .budget import TimeBudget
from .inputs import sort_by_length
from .options import TrainOptions
from .schedule import LearningRateSchedule
from .state import save_best, save_checkpoint


# The share of the training loop's time that checkpoints (and writing the best model) may take: a small data set's
# many short epochs skip checkpoints beyond it (BENCHMARKS.md, "Small data stays fast"); the last epoch is always saved.
CHECKPOINT_SHARE = 0.05


@dataclass
class RunParts:
    """What one run trains and evaluates with, prepared by Accelerate; `ema` is the moving average of the weights
    (with --ema-decay), which is then what is evaluated, chosen and saved while the optimizer trains the raw weights."""

    task: Task
    tokenizer: object
    names: list[str]
    dataset: object  # the splits as read, before tokenizing (the model card describes them)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    schedule: LearningRateSchedule
    train_loader: object
    eval_loaders: dict
    steps_per_epoch: int
    batch_size: int  # per process
    ema: object = None
    baseline: dict | None = None  # the one-hot baseline's record, when the run fitted it while setting up
    start: dict | None = None  # the linear fit the site effects start from (its name and how it was chosen): epoch 0
    start_head: torch.Tensor | None = None  # the pooled head's initial weights, zeroed for epoch 0 (`release_head`)
    components: dict | None = None  # a new model's optional parts, what was chosen and why (`components.py`)
    started: float = 0.0  # when the run started (`time.time()`): --max-train-minutes counts from there
    eval_orders: dict = field(
        default_factory=dict
    )  # per evaluation split, the rows of `dataset` its loader visits in turn
    baseline_outputs: dict = field(default_factory=dict)  # the baselines' test outputs, by kind (`runs.baselines`)
    compute_metrics: object = field(init=False)

    def __post_init__(self):
        self.compute_metrics = self.task.compute_metrics(self.names)

    @property
    def evaluated_model(self) -> torch.nn.Module:
        return self.model if self.ema is None else self.ema.module


@dataclass(frozen=True)
class RunHooks:
    """How a run inside a hyperparameter search differs from a user's: the test split is left for the search to score
    once, for the trial it chooses, and `on_validation(best_metric, progress)` hears each epoch's best validation value
    so far and the share of the schedule done (it may stop the run by raising)."""

    score_test: bool = True
    on_validation: Callable[[float | None, float], None] | None = None


def evaluate(
    models, dataloader, accelerator, compute_metrics, task: Task, description: str, progress: bool = True
) -> dict:
    """Metrics of a model, or of a list of models' mean prediction (`Task.combine_logits`), on a prepared dataloader."""
    return score_predictions(
        *predict(models, dataloader, accelerator, task, description, progress), compute_metrics, task
    )


def predict(
    models, dataloader, accelerator, task: Task, description: str, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of a model, or of a list of models' mean prediction, on a (prepared) dataloader; per
    residue, only the labelled positions, as rows. Gathered across processes with `gather_for_metrics`, which drops the
    samples the last batch repeats to even out the processes."""
    models = models if isinstance(models, list) else [models]
    for model in models:
        model.eval()
    predictions, references = [], []
    for batch in tqdm(
        dataloader, desc=description, leave=False, disable=not (progress and accelerator.is_local_main_process) or None
    ):
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = task.combine_logits([model(**batch).logits.float() for model in models])
        if task.labels_per_residue:
            # Batches differ in length across processes: pad before gathering, then keep the labelled positions.
            logits = accelerator.pad_across_processes(logits, dim=1)
            labels = accelerator.pad_across_processes(labels, dim=1, pad_index=-100)
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        if task.labels_per_residue:
            keep = labels != -100
            logits, labels = logits[keep][:, None, :], labels[keep][:, None]
        predictions.append(logits.cpu().numpy())
        references.append(labels.cpu().numpy())
    return np.concatenate(predictions), np.concatenate(references)


def score_predictions(predictions: np.ndarray, references: np.ndarray, compute_metrics, task: Task) -> dict:
    """The metrics of `predict`'s output, with the number of scored samples (`Task.count_key`)."""
    results = compute_metrics(EvalPrediction(predictions=predictions, label_ids=references))
    results[task.count_key] = int(len(references))
    return defined_metrics(
        {key: float(value) if isinstance(value, (float, np.floating)) else value for key, value in results.items()}
    )


def score_saved_models(
    options: TrainOptions, models: list, tokenizer, dataset, names: list[str], description: str
) -> dict:
    """Validation and test metrics (None for a split `dataset` lacks) of saved `models` together (their mean
    prediction, `Task.combine_logits`; one model alone is itself), in this process."""
    task = TASKS[options.task]
    evaluated = datasets.DatasetDict({split: dataset[split] for split in ("validation", "test") if split in dataset})
    tokenized = tokenize_dataset(evaluated, tokenizer) if evaluated else evaluated
    accelerator = Accelerator(mixed_precision=options.mixed_precision)
    models = [accelerator.prepare_model(model, evaluation_mode=True) for model in models]
    compute_metrics, scores = task.compute_metrics(names), {}
    for split in ("validation", "test"):
        if split not in tokenized:
            scores[split] = None
            continue
        loader = evaluation_loader(accelerator, tokenized[split], options.batch_size, task, tokenizer)
        scores[split] = evaluate(
            models, loader, accelerator, compute_metrics, task, f"{description} {split}", not options.quiet
        )
    return scores


def evaluation_loader(accelerator, tokenized_rows, batch_size: int, task: Task, tokenizer):
    """A prepared dataloader over tokenized rows, sorted by length (evaluation order is free)."""
    return accelerator.prepare_data_loader(
        DataLoader(sort_by_length(tokenized_rows), batch_size=batch_size, collate_fn=task.collator(tokenizer))
    )


def format_metric(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


class EpochTrainer:
    """Trains epoch after epoch, counting optimizer steps in `state["steps"]`; with `--max-train-minutes`, `budget`
    sizes the schedule and may end it early."""

    def __init__(self, options: TrainOptions, accelerator, parts: RunParts, state: dict):
        self.options, self.accelerator, self.parts, self.state = options, accelerator, parts, state
        self.budget = TimeBudget(options, accelerator, parts, state)
        self.started = self.lap_started = time.monotonic()

    def lap(self) -> float:
        """When the current lap (epoch) started; the next one starts now."""
        started, self.lap_started = self.lap_started, time.monotonic()
        return started

    def train_one_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over the training data (or up to the schedule's end); the summed loss and the batches it took."""
        parts, accelerator, state = self.parts, self.accelerator, self.state
        parts.model.train()
        parts.train_loader.set_epoch(epoch)
        started, samples, loss_sum, batches = time.perf_counter(), 0, 0.0, 0
        description = f"epoch {epoch}/{math.ceil(parts.schedule.steps / parts.steps_per_epoch)}"
        # `disable=None` is tqdm's own rule: a bar only on a terminal, so that a log file holds the epoch lines alone.
        progress = tqdm(
            parts.train_loader,
            desc=description,
            disable=not accelerator.is_local_main_process or self.options.quiet or None,
        )
        step_started = time.monotonic()
        for batch in progress:
            with accelerator.accumulate(parts.model):
                loss = parts.model(**batch).loss
                accelerator.backward(loss)
                parts.optimizer.step()
                parts.scheduler.step()
                parts.optimizer.zero_grad()
            if parts.ema is not None and accelerator.sync_gradients:
                parts.ema.update_parameters(accelerator.unwrap_model(parts.model))
            samples += len(batch["input_ids"]) * accelerator.num_processes
            loss_sum, batches = loss_sum + loss.item(), batches + 1
            progress.set_postfix(loss=f"{loss_sum / batches:.4f}", refresh=False)
            if accelerator.sync_gradients:
                state["steps"] += 1
                step_ended = time.monotonic()
                self.budget.after_step(step_ended - step_started)
                step_started = step_ended
            if state["steps"] >= parts.schedule.steps:
                break
        state["train_seconds"] += time.perf_counter() - started
        state["train_samples"] += samples
        return loss_sum, batches


def release_head(accelerator, parts: RunParts) -> None:
    """Once epoch 0 (the linear start itself) is validated, give the pooled head its initial weights back. Zeroed, it
    passes the network no gradient; on variant libraries the network then learned next to nothing for the first half
    of a run or more, and ended below the plain architecture (BENCHMARKS.md, "A head the network can learn through")."""
    if parts.start_head is not None:
        with torch.no_grad():
            accelerator.unwrap_model(parts.model).score.weight.copy_(parts.start_head)


def fit(
    options: TrainOptions, accelerator, parts: RunParts, state: dict, output_dir: Path, hooks: RunHooks = RunHooks()
) -> None:
    """Train from `state` (a fresh run's or a checkpoint's) to the end of the schedule: per epoch, validation
    metrics and the best epoch's model kept; a checkpoint with that model in `best/` at the epoch's end, unless the
    checkpoints so far took more than `CHECKPOINT_SHARE` of the loop's time (many short epochs of a small data set),
    and after the last epoch."""
    trainer, checkpoints = (
        EpochTrainer(options, accelerator, parts, state),
        Checkpoints(accelerator, output_dir, parts, state),
    )
    if parts.start is not None and not state["history"]:
        # A model started from a linear fit is a candidate before any training: should training not improve
        # on it, validation keeps it (epoch 0).
        validation_started = time.monotonic()
        checkpoints.keep_if_best(validate(options, accelerator, parts, state, 0, None))
        release_head(accelerator, parts)
        trainer.budget.validated(time.monotonic() - validation_started)
        trainer.budget.epoch_ended(time.monotonic() - validation_started)
    while state["steps"] < parts.schedule.steps and not patience_ran_out(options, state):
        epoch = state["epoch"] + 1
        loss_sum, batches = trainer.train_one_epoch(epoch)
        epoch_end_started = time.monotonic()
        train_loss = accelerator.reduce(
            torch.tensor([loss_sum, batches], device=accelerator.device, dtype=torch.float64), "sum"
        )
        checkpoints.keep_if_best(
            validate(options, accelerator, parts, state, epoch, float(train_loss[0] / train_loss[1]))
        )
        trainer.budget.validated(time.monotonic() - epoch_end_started)
        state["epoch"] = epoch
        resized = trainer.budget.resize()  # before the checkpoint, which then holds the schedule a resume keeps
        if hooks.on_validation is not None:
            hooks.on_validation(state["best_metric"], state["steps"] / parts.schedule.steps)
        last = state["steps"] >= parts.schedule.steps or patience_ran_out(options, state)
        checkpoints.at_epoch_end(epoch, last or resized, time.monotonic() - trainer.started)
        trainer.budget.epoch_ended(time.monotonic() - epoch_end_started)
        # The loop's own time (training, validation, checkpoints), which --max-train-minutes budgets, summed over
        # resumes; a checkpoint holds the time up to the epoch before its own.
        state["fit_seconds"] = state.get("fit_seconds", 0.0) + time.monotonic() - trainer.lap()
    checkpoints.write_best()  # a run resumed after its last epoch, or one that never trained


class Checkpoints:
    """A run's checkpoints and its best model: the best epoch's model is kept in memory when validation finds it and
    written to `best/` with the next checkpoint, so that `best/` is always the best epoch its last checkpoint
    records; a checkpoint is skipped while checkpoints have taken more than `CHECKPOINT_SHARE` of the loop."""

    def __init__(self, accelerator, output_dir: Path, parts: RunParts, state: dict):
        self.accelerator, self.output_dir, self.parts, self.state = accelerator, output_dir, parts, state
        self.best_model, self.seconds = None, 0.0  # this process's checkpoint time (a resumed run's since it resumed)

    def keep_if_best(self, improved: bool) -> None:
        if improved and self.accelerator.is_main_process:
            self.best_model = copy.deepcopy(self.accelerator.unwrap_model(self.parts.evaluated_model)).cpu()

    def write_best(self) -> None:
        if self.accelerator.is_main_process and self.best_model is not None:
            save_best(self.best_model, self.parts.tokenizer, self.output_dir)
            self.best_model = None
        self.accelerator.wait_for_everyone()

    def at_epoch_end(self, epoch: int, required: bool, loop_seconds: float) -> None:
        """Checkpoint after `epoch` (with `best/`) if `required` (the last epoch, or one whose checkpoint must hold a
        resized schedule) or the checkpoints' share of the loop allows it (every process decides on the main
        process's clock)."""
        due = required or self.seconds <= CHECKPOINT_SHARE * loop_seconds
        if self.accelerator.num_processes > 1:
            due = bool(broadcast(torch.tensor([due], device=self.accelerator.device))[0])
        if due:
            started = time.monotonic()
            self.write_best()
            save_checkpoint(self.accelerator, self.output_dir, epoch, self.state, self.parts.ema)
            self.seconds += time.monotonic() - started
            # What checkpoints and best/ cost, summed over resumes (a checkpoint holds the time before its own).
            self.state["checkpoint_seconds"] = self.state.get("checkpoint_seconds", 0.0) + time.monotonic() - started


def validate(
    options: TrainOptions, accelerator, parts: RunParts, state: dict, epoch: int, train_loss: float | None
) -> bool:
    """Score the model on validation after `epoch` and record it; whether it is the best so far."""
    metrics = evaluate(
        parts.evaluated_model,
        parts.eval_loaders["validation"],
        accelerator,
        parts.compute_metrics,
        parts.task,
        "validation",
        not options.quiet,
    )
    if options.metric_for_best_model not in metrics:  # AUROC is left out when a class is missing from validation
        raise ValueError(
            f"--metric-for-best-model {options.metric_for_best_model!r} is not among the validation metrics "
            f"{sorted(metrics)}."
        )
    state["history"].append({"epoch": epoch, "train_loss": train_loss, **metrics})
    report_epoch(options, accelerator, state["history"][-1], metrics)
    if metric_is_better(options.metric_for_best_model, metrics[options.metric_for_best_model], state["best_metric"]):
        state["best_epoch"], state["best_metric"] = epoch, metrics[options.metric_for_best_model]
        return True
    return False


def patience_ran_out(options: TrainOptions, state: dict) -> bool:
    """Early stopping: `--early-stopping-patience` epochs have passed since the best one."""
    patience = options.early_stopping_patience
    return bool(patience and state["best_epoch"] is not None and state["epoch"] - state["best_epoch"] >= patience)


def report_epoch(options: TrainOptions, accelerator, entry: dict, metrics: dict) -> None:
    """The epoch's line (unless --quiet) and, with --report-to, its values in the tracker."""
    if options.report_to:
        logged = {f"validation/{key}": value for key, value in metrics.items() if isinstance(value, float)}
        loss = {} if entry["train_loss"] is None else {"train/loss": entry["train_loss"]}
        accelerator.log({**loss, **logged}, step=entry["epoch"])
    if accelerator.is_main_process and not options.quiet:
        shown = ", ".join(
            f"{key} {format_metric(value)}" for key, value in metrics.items() if isinstance(value, float | None)
        )
        tqdm.write(f"epoch {entry['epoch']}: validation {shown}")
