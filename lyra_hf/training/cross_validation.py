"""Cross-validation (`--fold-column`): one complete run per fold, that fold the test split, and the folds' mean and
standard deviation."""

import dataclasses
import json
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..checkpoints import RunLayout

from ..data import check_columns, fold_values, read_table
from ..outputs import locked_output_dir, refuse_earlier_outputs, write_json
from .loop import format_metric
from .options import TrainOptions
from .candidates import train_one


def folds_to_run(options: TrainOptions) -> list[str]:
    """The folds of `--fold-column` (or those `--folds` names), checked to exist."""
    table = read_table(options.train_file)
    check_columns(table, [options.fold_column], f"--train-file {options.train_file}")
    folds = fold_values(table, options.fold_column)
    if options.folds is not None:
        if unknown := [fold for fold in options.folds if fold not in folds]:
            raise ValueError(f"--folds {','.join(unknown)}: not in column {options.fold_column!r}, whose folds are {folds}.")
        return [fold for fold in folds if fold in options.folds]
    if len(folds) < 2:
        raise ValueError(f"--fold-column {options.fold_column!r} holds one fold ({folds[0]!r}); cross-validation needs two or more.")
    return folds


def cross_validate(options: TrainOptions) -> str | None:
    """One complete run per fold of `--fold-column` in `OUTPUT_DIR/fold_<k>/` (`--test-fold k`: that fold the test
    split, validation carved from the others); then `OUTPUT_DIR/results.json` with each fold's test metrics and their
    mean and standard deviation (NumPy's, over folds). With `--resume-from-checkpoint latest`, finished folds are kept
    and an interrupted one continues from its last checkpoint."""
    output_dir, layout = Path(options.output_dir), RunLayout(options.output_dir)
    main_process = int(os.environ.get("RANK", "0")) == 0
    folds = folds_to_run(options)
    if options.resume_from_checkpoint not in (None, "latest"):
        raise ValueError("--fold-column resumes with --resume-from-checkpoint latest (each fold from its own last checkpoint).")
    with locked_output_dir(output_dir) if main_process else nullcontext():
        if main_process and not options.resume_from_checkpoint and not options.overwrite_output_dir:
            remedy = "--resume-from-checkpoint latest to continue it or --overwrite-output-dir to replace it"
            refuse_earlier_outputs(f"--output-dir {output_dir}", [layout.RESULTS] if layout.results.exists() else [], "a cross-validation", remedy)
        per_fold = {}
        for fold in folds:
            folder = layout.fold(fold)
            if not (options.resume_from_checkpoint and folder.results.is_file()):
                line = train_one(dataclasses.replace(options, output_dir=str(folder.root), test_fold=fold, folds=None))
                if line and main_process:
                    tqdm.write(f"fold {fold}: {line}")
            per_fold[fold] = json.loads(folder.results.read_text())
        if not main_process:
            return None
        results = fold_statistics(options, per_fold)
        write_json(layout.results, results)
        write_json(layout.options, options.options_file_values())
    metric = options.metric_for_best_model
    beside = f" ({results['baseline']['name']} {format_metric(results['baseline']['test_mean'][metric])})" if "baseline" in results else ""
    return (
        f"{len(folds)} folds of {options.fold_column}: test {metric} {format_metric(results['test_mean'].get(metric))} ± "
        f"{format_metric(results['test_std'].get(metric))}{beside}; per-fold runs and {RunLayout.RESULTS} in {output_dir}"
    )


def fold_statistics(options: TrainOptions, per_fold: dict[str, dict]) -> dict:
    """The cross-validation's results.json from each fold's. A metric undefined (null) in some fold has no mean: it is
    left out, and each fold's value stays in "folds"."""
    folds = list(per_fold)
    metrics = [key for key in per_fold[folds[0]]["test"] if all(isinstance(per_fold[fold]["test"].get(key), float) for fold in folds)]
    values = {metric: np.array([per_fold[fold]["test"][metric] for fold in folds]) for metric in metrics}
    results = {
        "fold_column": options.fold_column,
        "folds": {fold: {key: per_fold[fold][key] for key in ("test", "best_epoch", "baseline") if key in per_fold[fold]} for fold in folds},
        "test_mean": {metric: float(values[metric].mean()) for metric in metrics},
        "test_std": {metric: float(values[metric].std()) for metric in metrics},
        "metric_for_best_model": options.metric_for_best_model,
    }
    baselines = [per_fold[fold].get("baseline") or {} for fold in folds]
    if all(baseline.get("test") for baseline in baselines):
        metric = options.metric_for_best_model
        scores = [baseline["test"].get(metric) for baseline in baselines]
        if all(isinstance(score, float) for score in scores):
            results["baseline"] = {"name": baselines[0]["name"], "test_mean": {metric: float(np.mean(scores))}, "test_std": {metric: float(np.std(scores))}}
    return results
