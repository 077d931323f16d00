"""What a run leaves: the test score of the best epoch's model, `results.json` (with how the run was made), the model
card, the Hub push, and the closing line."""

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from ..checkpoints import RunLayout
from ..data import LABELS_COLUMN, SEQUENCE_COLUMN
from ..hub import build_model_card, push_run
from ..outputs import write_csv, write_json, write_text
from .loop import RunParts, format_metric, predict, score_predictions
from .options import TrainOptions
from .schedule import planned_steps
from .state import rerun_changes


def run_record(options: TrainOptions, input_sha256: dict[str, str]) -> dict:
    """How a run was made, for its results.json: the command line, every option's value, the input files' digests (as
    `run_settings` took them) and the versions of what ran it. The command line, run again, makes the run again."""
    from .. import __version__

    versions = {
        "lyra_hf": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    settings = {key: value for key, value in dataclasses.asdict(options).items() if key not in ("command", "rerun_of")}
    record = {
        "command": options.command,
        "settings": json.loads(json.dumps(settings)),
        "input_sha256": input_sha256,
        "versions": versions,
    }
    if changes := rerun_changes(options):  # only with --allow-changed-inputs: otherwise the run was refused
        record["changed_inputs"] = {
            key: {"recorded_sha256": recorded, "sha256": now} for key, (recorded, now) in changes.items()
        }
    return record


def describe_data(options: TrainOptions, dataset) -> str:
    sizes = ", ".join(f"{split} {len(rows):,}" for split, rows in dataset.items())
    if options.train_file is None:
        return (
            f"The built-in synthetic epistatic fitness landscape of `lyra-train` (seed {options.data_seed}): "
            f"{sizes} sequences."
        )
    files = ", ".join(
        f"`{Path(path).name}`" for path in (options.train_file, options.validation_file, options.test_file) if path
    )
    return (
        f"Files {files}; sequence column `{options.sequence_column}`, labels `{', '.join(options.label_columns)}`; "
        f"{sizes} sequences."
    )


def describe_protocol(options: TrainOptions, results: dict) -> str:
    if options.validation_file:
        validation = "the validation file"
    elif options.validation_column:
        validation = f"the rows marked in column `{options.validation_column}`"
    else:
        part = f", slice {options.validation_part} of its shuffle" if options.validation_part else ""
        validation = f"a validation split carved from train (seed {options.data_seed}{part})"
    split = ""
    if options.split_column:
        split = f"Splits from column `{options.split_column}` ({' / '.join(options.split_values)}). "
    elif options.test_fold is not None:
        split = f"Cross-validation: fold {options.test_fold} of column `{options.fold_column}` was the test split. "
    return split + (
        f"`lyra-train`, {len(results['history'])} epoch(s), AdamW (learning rate {options.learning_rate}, weight decay "
        f"{options.weight_decay}, {options.lr_scheduler} schedule), batch size "
        f"{results.get('batch_size_per_process', options.batch_size)} per process on "
        f"{results['num_processes']} process(es)"
        + (f", weights averaged (exponential moving average, decay {options.ema_decay})" if options.ema_decay else "")
        + f". The best epoch ({results['best_epoch']}) was chosen on {validation} "
        f"by {options.metric_for_best_model}; the test split was scored once, with that model."
    )


def run_card(
    options: TrainOptions,
    model,
    tokenizer,
    results: dict,
    dataset,
    protocol: str,
    ensemble_members: list[str] | None = None,
):
    """The model card of a run's `best/` (or an ensemble's, with `ensemble_members`), which `--push-to-hub` pushes."""
    return build_model_card(
        model,
        tokenizer,
        options.push_to_hub or f"local/{Path(options.output_dir).name}",
        results,
        dataset_name=options.hub_dataset_name
        or (Path(options.train_file).stem if options.train_file else "synthetic-epistatic-landscape"),
        license=options.hub_license,
        training_data=describe_data(options, dataset),
        protocol=protocol,
        ensemble_members=ensemble_members,
    )


def share(options: TrainOptions, output_dir: Path, card) -> None:
    """Push the run (`--push-to-hub`), with its card."""
    if options.push_to_hub:
        url = push_run(
            output_dir, options.push_to_hub, card, private=options.hub_private, revision=options.hub_revision
        )
        print(f"lyra-train: pushed to {url}", file=sys.stderr)


def run_results(options: TrainOptions, accelerator, parts: RunParts, state: dict, best_model) -> dict:
    """results.json of a finished run: the best epoch's validation metrics, its model's test metrics (scored once,
    here), the history, the cost and how the run was made."""
    test = None
    if "test" in parts.eval_loaders:
        predictions, references = predict(
            best_model, parts.eval_loaders["test"], accelerator, parts.task, "test", not options.quiet
        )
        test = score_predictions(predictions, references, parts.compute_metrics, parts.task)
        if accelerator.is_main_process and parts.task.numeric_labels:
            write_test_predictions(RunLayout(options.output_dir).test_predictions, parts, predictions)
    return {
        "validation": next(entry for entry in state["history"] if entry["epoch"] == state["best_epoch"]),
        "test": test,
        "best_epoch": state["best_epoch"],
        "metric_for_best_model": options.metric_for_best_model,
        "ema_decay": options.ema_decay,
        "history": state["history"],
        "start": parts.start,
        "components": parts.components,
        "num_parameters": accelerator.unwrap_model(parts.model).num_parameters(),
        "num_processes": accelerator.num_processes,
        "batch_size_per_process": parts.batch_size,
        "train_seconds": state["train_seconds"],
        "fit_seconds": state.get("fit_seconds"),
        "checkpoint_seconds": state.get("checkpoint_seconds"),
        "samples_per_second": state["train_samples"] / state["train_seconds"] if state["train_seconds"] else None,
        "stopped_early": state["steps"] < parts.schedule.steps
        or "deadline_cut_schedule_steps" in state
        or parts.schedule.steps < planned_steps(options.epochs, parts.steps_per_epoch),
        "steps": state["steps"],
        "schedule_steps": parts.schedule.steps,
        "deadline_cut_schedule_steps": state.get("deadline_cut_schedule_steps"),
        **run_record(options, state["settings"]["input_sha256"]),
    }


def write_test_predictions(path: Path, parts: RunParts, predictions: np.ndarray) -> None:
    """The best model's prediction of each test row, in the test split's order: its sequence, then per target the
    prediction, the label, and the baselines' predictions (`<kind>_<target>`: `baseline`, and with a prior
    `with_prior` and `prior_alone`), what cross-validation pools into out-of-fold predictions."""
    rows = np.empty_like(parts.eval_orders["test"])
    rows[parts.eval_orders["test"]] = np.arange(len(rows))  # sorted position of each row of the split
    test = parts.dataset["test"]
    labels = np.asarray(test[LABELS_COLUMN], dtype=np.float64).reshape(len(test), -1)
    predicted = predictions.reshape(len(predictions), -1)[rows]
    columns = {"sequence": list(test[SEQUENCE_COLUMN])}
    baselines = {
        kind: np.asarray(values, dtype=np.float64).reshape(len(test), -1)
        for kind, values in parts.baseline_outputs.items()
        if values is not None
    }
    for index, name in enumerate(parts.names):
        columns.update({f"prediction_{name}": predicted[:, index].tolist(), f"label_{name}": labels[:, index].tolist()})
        columns.update(
            {
                f"{kind}_{name}": values[:, min(index, values.shape[1] - 1)].tolist()
                for kind, values in baselines.items()
            }
        )
    write_csv(path, columns)


def schedule_note(options: TrainOptions, parts: RunParts, state: dict) -> str:
    """How the run's length was decided, for the log: an early stop, or the schedule a budget sized."""
    ended = f"lyra-train: {state['steps']:,} optimizer steps in {state['epoch']} epoch(s)"
    if state["steps"] < parts.schedule.steps:
        return (
            f"{ended}: stopped early, no better validation {options.metric_for_best_model} for "
            f"{options.early_stopping_patience} epoch(s)."
        )
    if state.get("deadline_cut_schedule_steps"):
        return (
            f"{ended}: --max-train-minutes {options.max_train_minutes} ran out before the "
            f"{state['deadline_cut_schedule_steps']:,} steps "
            "it had sized the schedule to (the steps slowed down), so the learning rate did not decay to its end."
        )
    return (
        f"{ended}: --max-train-minutes {options.max_train_minutes} sized the schedule to {parts.schedule.steps:,} "
        "steps from the speed of the first ones."
    )


def finish_run(options: TrainOptions, accelerator, parts: RunParts, state: dict, output_dir: Path) -> dict:
    """Score the best epoch's model on test, then write results.json and the card, and push (main process)."""
    if accelerator.is_main_process and (options.max_train_minutes or state["steps"] < parts.schedule.steps):
        print(schedule_note(options, parts, state), file=sys.stderr)
    layout = RunLayout(output_dir)
    best_model = accelerator.prepare_model(parts.task.model_class.from_pretrained(layout.best), evaluation_mode=True)
    results = run_results(options, accelerator, parts, state, best_model)
    if parts.baseline is not None:
        results["baseline"] = parts.baseline
    results["run_seconds"] = time.time() - parts.started  # what --max-train-minutes budgets
    if options.report_to:
        accelerator.end_training()
    if accelerator.is_main_process:
        write_json(layout.results, results)
        card = run_card(
            options,
            accelerator.unwrap_model(best_model),
            parts.tokenizer,
            results,
            parts.dataset,
            describe_protocol(options, results),
        )
        write_text(layout.best / "README.md", str(card))
        share(options, output_dir, card)
    accelerator.wait_for_everyone()
    return results


def beside_baseline(results: dict, split: str, metric: str) -> str:
    """The baselines' scores to show beside the model's, e.g. " (one-hot ridge 0.7490)", with a prior also the
    augmented model's and the prior's own; empty without a baseline."""
    baseline = results.get("baseline")
    if not baseline or not baseline.get(split):
        return ""
    shown = [f"{baseline['name']} {format_metric(baseline[split].get(metric))}"]
    for entry in (baseline.get("with_prior"), baseline.get("prior_alone")):
        if entry and entry.get(split) and metric in entry[split]:
            shown.append(f"{entry['name']} {format_metric(entry[split][metric])}")
    return f" ({'; '.join(shown)})"


def summary_line(options: TrainOptions, results: dict) -> str:
    """The closing line of one run."""
    metric = results["metric_for_best_model"]
    split = "test" if results["test"] else "validation"
    return (
        f"best epoch {results['best_epoch']}: {split} {metric} {format_metric(results[split][metric])}"
        f"{beside_baseline(results, split, metric)}; model and "
        f"tokenizer in {RunLayout(options.output_dir).best}"
        + (f" ({results[split]['note']})" if "note" in results[split] else "")
    )
