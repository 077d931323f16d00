"""Cross-validation (`--fold-column`, one scheme or several, e.g. ProteinGym's `fold_random_5,fold_modulo_5,
fold_contiguous_5`): one complete run per fold, that fold the test split, all of them side by side over the CPUs;
then per scheme the out-of-fold predictions pooled (`oof_predictions.csv`) and both figures ProteinGym reports: the
metric of all out-of-fold predictions pooled, and the mean (and standard deviation) of the per-fold metrics."""

import dataclasses
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import EvalPrediction

from ..checkpoints import RunLayout
from ..data import check_columns, fold_values, read_table
from ..data.loading import sequence_groups
from ..metrics import defined_metrics
from ..outputs import locked_output_dir, refuse_earlier_outputs, write_csv, write_json
from ..tasks import TASKS
from .candidates import Plan, finish_candidates, plan_run
from .loop import format_metric
from .options import TrainOptions
from .results import summary_line
from .runs import train_side_by_side


def schemes_of(options: TrainOptions) -> list[str]:
    return [scheme.strip() for scheme in options.fold_column.split(",") if scheme.strip()]


def folds_to_run(options: TrainOptions, scheme: str) -> list[str]:
    """The folds of column `scheme` (or those `--folds` names), checked to exist."""
    table = read_table(options.train_file)
    check_columns(table, [scheme], f"--train-file {options.train_file}")
    folds = fold_values(table, scheme)
    if options.folds is not None:
        if unknown := [fold for fold in options.folds if fold not in folds]:
            raise ValueError(f"--folds {','.join(unknown)}: not in column {scheme!r}, whose folds are {folds}.")
        return [fold for fold in folds if fold in options.folds]
    if len(folds) < 2:
        raise ValueError(f"--fold-column {scheme!r} holds one fold ({folds[0]!r}); cross-validation needs two or more.")
    return folds


def scheme_layout(options: TrainOptions, scheme: str) -> RunLayout:
    """A scheme's folder: the run folder itself for one scheme, `OUTPUT_DIR/<scheme>/` for several."""
    return (
        RunLayout(options.output_dir) if len(schemes_of(options)) == 1 else RunLayout(Path(options.output_dir) / scheme)
    )


def warn_of_duplicates_across_folds(options: TrainOptions, scheme: str) -> None:
    """A line when a fold column puts rows of one sequence in more than one fold: a fold's test split then scores
    sequences its training split holds, and its score leaks."""
    table = read_table(options.train_file)
    check_columns(table, [scheme, options.sequence_column], f"--train-file {options.train_file}")
    folds = [str(value).strip() for value in table[scheme]]
    straddling = [
        group for group in sequence_groups(table[options.sequence_column]) if len({folds[row] for row in group}) > 1
    ]
    if straddling:
        tqdm.write(
            f"lyra-train: warning: --fold-column {scheme} puts {len(straddling):,} sequences in more than one fold; "
            "their test scores read sequences training saw (merge duplicates, or give their rows one fold)."
        )


def fold_plans(options: TrainOptions) -> dict[tuple[str, str], Plan]:
    """Each scheme's folds as runs (`candidates.plan_run`: one model, or candidates), their data checked here."""
    folds = {scheme: folds_to_run(options, scheme) for scheme in schemes_of(options)}
    for scheme in folds:
        warn_of_duplicates_across_folds(options, scheme)
    return {
        (scheme, fold): plan_run(
            dataclasses.replace(
                options,
                fold_column=scheme,
                output_dir=str(scheme_layout(options, scheme).fold(fold).root),
                test_fold=fold,
                folds=None,
            )
        )
        for scheme, scheme_folds in folds.items()
        for fold in scheme_folds
    }


def cross_validate(options: TrainOptions) -> str | None:
    """Every fold of every scheme of `--fold-column` as a complete run in `<scheme folder>/fold_<k>/` (`--test-fold k`:
    that fold the test split, validation carved from the others), side by side over the CPUs (one after another with
    `--num-processes` or on a GPU); then per scheme `oof_predictions.csv` and `results.json` (`fold_statistics`), and
    with several schemes `OUTPUT_DIR/results.json` holding each. With `--resume-from-checkpoint latest`, finished folds
    are kept and interrupted ones continue from their last checkpoint."""
    started, layout = time.time(), RunLayout(options.output_dir)
    main_process = int(os.environ.get("RANK", "0")) == 0
    if options.resume_from_checkpoint not in (None, "latest"):
        raise ValueError(
            "--fold-column resumes with --resume-from-checkpoint latest (each fold from its own last checkpoint)."
        )
    plans = fold_plans(options)
    with locked_output_dir(options.output_dir) if main_process else nullcontext():
        if main_process and not options.resume_from_checkpoint and not options.overwrite_output_dir:
            remedy = "--resume-from-checkpoint latest to continue it or --overwrite-output-dir to replace it"
            refuse_earlier_outputs(
                f"--output-dir {options.output_dir}",
                [layout.RESULTS] if layout.results.exists() else [],
                "a cross-validation",
                remedy,
            )
        pending = {
            key: plan
            for key, plan in plans.items()
            if not (options.resume_from_checkpoint and RunLayout(plan.options.output_dir).results.is_file())
        }
        runs = {
            f"{scheme} fold {fold}" + (f" {name}" if name else ""): run
            for (scheme, fold), plan in pending.items()
            for name, run in plan.runs.items()
        }
        train_side_by_side(
            runs,
            resume=bool(options.resume_from_checkpoint),
            one_at_a_time=options.num_processes is not None,
            started=started,
        )
        for (scheme, fold), plan in pending.items():
            line = (
                finish_candidates(plan, started)
                if plan.candidates
                else summary_line(plan.options, json.loads(RunLayout(plan.options.output_dir).results.read_text()))
            )
            tqdm.write(f"{scheme} fold {fold}: {line}")
        if not main_process:
            return None
        return write_schemes(options, plans)


def write_schemes(options: TrainOptions, plans: dict[tuple[str, str], Plan]) -> str:
    """Each scheme's out-of-fold predictions and results.json (and with several schemes, one results.json holding
    them all); the closing line."""
    metric, lines, every = options.metric_for_best_model, [], {}
    for scheme in schemes_of(options):
        folds = {fold: RunLayout(plan.options.output_dir) for (name, fold), plan in plans.items() if name == scheme}
        layout = scheme_layout(options, scheme)
        pooled = write_out_of_fold(options, folds, layout)
        results = fold_statistics(
            options, scheme, {fold: json.loads(folder.results.read_text()) for fold, folder in folds.items()}, pooled
        )
        write_json(layout.results, results)
        write_json(layout.options, dataclasses.replace(options, fold_column=scheme).options_file_values())
        every[scheme] = results
        beside = pooled_baselines(results.get("baseline"), metric)
        lines.append(
            f"{scheme}, {len(folds)} folds: pooled test {metric} {format_metric(results['test_pooled'].get(metric))}, "
            f"per fold {format_metric(results['test_mean'].get(metric))} ± "
            f"{format_metric(results['test_std'].get(metric))}{beside}"
        )
    if len(every) > 1:
        write_json(RunLayout(options.output_dir).results, {"schemes": every, "metric_for_best_model": metric})
        write_json(RunLayout(options.output_dir).options, options.options_file_values())
    return "; ".join(lines) + f"; per-fold runs and {RunLayout.RESULTS} in {options.output_dir}"


# The predictions a test predictions file holds per target, by column prefix: the model's and the baselines'.
PREDICTION_KINDS = ("prediction", "baseline", "with_prior", "prior_alone")


def pooled_baselines(baseline: dict | None, metric: str) -> str:
    """The baselines' pooled scores beside a scheme's, e.g. " (one-hot ridge 0.1012; ... + prior 0.6803)"."""
    if not baseline:
        return ""
    entries = [baseline, baseline.get("with_prior"), baseline.get("prior_alone")]
    return (
        " ("
        + "; ".join(f"{entry['name']} {format_metric(entry['test_pooled'].get(metric))}" for entry in entries if entry)
        + ")"
    )


def write_out_of_fold(options: TrainOptions, folds: dict[str, RunLayout], layout: RunLayout) -> dict:
    """`oof_predictions.csv` of a scheme (regression): each fold's test predictions (the model's and the baselines')
    with its fold, pooled; and the pooled predictions' metrics, by kind (`PREDICTION_KINDS`; empty for other tasks)."""
    if not TASKS[options.task].numeric_labels:
        return {}
    tables = {fold: read_table(str(folder.test_predictions)) for fold, folder in folds.items()}
    names = [name for name in next(iter(tables.values())).column_names if name != "sequence"]
    columns = {"variant": [], "fold": [], **{name: [] for name in names}}
    for fold, table in tables.items():
        columns["variant"] += list(table["sequence"])
        columns["fold"] += [fold] * len(table)
        for name in names:
            columns[name] += list(table[name])
    write_csv(layout.root / RunLayout.OUT_OF_FOLD, columns)
    targets = [name.removeprefix("label_") for name in names if name.startswith("label_")]
    labels = np.array([columns[f"label_{target}"] for target in targets], dtype=np.float64).T
    compute_metrics, pooled = TASKS[options.task].compute_metrics(targets), {}
    for kind in PREDICTION_KINDS:
        if all(f"{kind}_{target}" in columns for target in targets):
            predicted = np.array([columns[f"{kind}_{target}"] for target in targets], dtype=np.float64).T
            metrics = compute_metrics(EvalPrediction(predictions=predicted, label_ids=labels))
            pooled[kind] = defined_metrics(
                {**{key: float(value) for key, value in metrics.items()}, "num_samples": len(labels)}
            )
    return pooled


def fold_statistics(options: TrainOptions, scheme: str, per_fold: dict[str, dict], pooled: dict | None) -> dict:
    """A scheme's results.json from each fold's: the metrics of the pooled out-of-fold predictions (`test_pooled`),
    and the mean and standard deviation (NumPy's, over folds) of the per-fold metrics. A metric undefined (null) in
    some fold has no mean: it is left out, and each fold's value stays in "folds"."""
    folds = list(per_fold)
    metrics = [
        key
        for key in per_fold[folds[0]]["test"]
        if all(isinstance(per_fold[fold]["test"].get(key), float) for fold in folds)
    ]
    values = {metric: np.array([per_fold[fold]["test"][metric] for fold in folds]) for metric in metrics}
    results = {
        "fold_column": scheme,
        "folds": {
            fold: {
                key: per_fold[fold][key]
                for key in ("test", "best_epoch", "baseline", "components")
                if key in per_fold[fold]
            }
            for fold in folds
        },
        "test_pooled": pooled.get("prediction", {}),
        "test_mean": {metric: float(values[metric].mean()) for metric in metrics},
        "test_std": {metric: float(values[metric].std()) for metric in metrics},
        "metric_for_best_model": options.metric_for_best_model,
    }
    results.update(
        baseline_statistics(
            options.metric_for_best_model, [per_fold[fold].get("baseline") or {} for fold in folds], pooled
        )
    )
    return results


def baseline_statistics(metric: str, baselines: list[dict], pooled: dict) -> dict:
    """The baselines' pooled out-of-fold metrics and the mean and deviation over folds of `metric` (with a prior: the
    augmented model's and the prior's own too), under `baseline`."""
    if not all(baseline.get("test") for baseline in baselines):
        return {}
    record = {}
    for kind, entries in (
        ("baseline", baselines),
        ("with_prior", [b.get("with_prior") for b in baselines]),
        ("prior_alone", [b.get("prior_alone") for b in baselines]),
    ):
        if not all(entry and entry.get("test") for entry in entries):
            continue
        scores = [entry["test"].get(metric) for entry in entries]
        summary = {"name": entries[0]["name"], "test_pooled": pooled.get(kind, {})}
        if all(isinstance(score, float) for score in scores):
            summary.update(test_mean={metric: float(np.mean(scores))}, test_std={metric: float(np.std(scores))})
        record.update(summary if kind == "baseline" else {kind: summary})
    return {"baseline": record}
