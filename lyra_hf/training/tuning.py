"""`lyra-train --tune N`: a hyperparameter search with Optuna (the `tune` extra: pip install "lyra-hf[tune]").

Trial 0 is the configuration the options give (the defaults, unless flags say otherwise); Optuna's TPE sampler
proposes the others from `SEARCH_SPACE`. Each trial is a complete lyra-train run in `OUTPUT_DIR/trials/trial_<n>/`
without the test split. After each epoch a trial reports its best validation value so far at the tenths of its schedule
it has reached, the steps on which trials of different lengths compare, and the median pruner stops one that falls below
the median of earlier trials there. The trial with the best validation metric is chosen and its model copied to
`OUTPUT_DIR/best/`; the test split is scored once for it, and once for trial 0 to show what tuning gained, beside the
one-hot baseline. With `--ensemble K` the chosen configuration is trained again with K seeds, and that ensemble is the
result.

Without an accelerator, min(N, usable CPUs) trials run side by side, one single-threaded process each (`lyra_hf.cpu`);
with one, one after another. With `--max-train-minutes M` the whole search fits in M: each trial's schedule gets
M x TRIAL_BUDGET_SHARE / rounds, rounds being N over the trials run at once, rounded up.

The study lives in `OUTPUT_DIR/tuning.journal` (Optuna's journal file storage), which `--resume-from-checkpoint latest`
continues: finished trials are kept, and one a kill interrupted runs again with its parameters. `--tune-storage URL`
puts it in a database instead, which lyra-train processes on several machines share (Optuna's distributed mode): each
runs trials until the study holds N.
"""

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

from ..baseline import fit_baseline
from ..checkpoints import RunLayout
from ..outputs import atomic_directory, locked_output_dir, remove_outputs, write_json, write_text
from ..tasks import TASKS
from .ensembles import train_ensemble
from .inputs import check_metric_name, load_data, memory_bound_max_length
from .loop import RunHooks, format_metric, score_saved_models
from .options import INPUT_FILES, TrainOptions
from .results import describe_protocol, run_card, run_record, share
from .runs import train
from .search import Search, given_configuration, open_search, redact
from .setup import build_config, build_tokenizer
from .state import check_output_dir, file_sha256
from .tuning_report import plot_search, write_trials_table


def tune(options: TrainOptions) -> str:
    """`lyra-train --tune N`: check the inputs, run the search, then choose, score and save; the closing line."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "--tune runs its trials in processes of its own; run it without accelerate launch or torchrun."
        )
    output_dir = Path(options.output_dir)
    with locked_output_dir(output_dir):
        check_output_dir(options, output_dir)
        tokenizer = build_tokenizer(options)
        max_length = options.max_length or memory_bound_max_length(build_config(options, tokenizer), options.batch_size)
        dataset, names = load_data(options, tokenizer, max_length)
        check_metric_name(options, names)
        if options.overwrite_output_dir and not options.resume_from_checkpoint:
            remove_outputs(output_dir, RunLayout.OUTPUTS)
        started = time.monotonic()
        search = open_search(options)
        search.run_trials(options.tune)
        write_trials_table(search.study, output_dir / RunLayout.TRIALS_TABLE, options.metric_for_best_model)
        plot_search(search.study, output_dir / RunLayout.TUNING_FIGURE, options.metric_for_best_model)
        results, card = finish_search(search, tokenizer, dataset, names)
        results["search"]["seconds"] = time.monotonic() - started
        write_json(RunLayout(output_dir).results, results)
        write_json(RunLayout(output_dir).options, options.options_file_values())
        share(options, output_dir, card)
    return tuned_line(options, results)


def chosen_trial(study):
    """The complete trial with the best validation metric."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise RuntimeError("no trial of the search completed; trials.csv says why")
    return study.best_trial


def given_trial(search: Search):
    """Trial 0 of the search: the first with the configuration the options give."""
    given = {name: value for name, value in given_configuration(search.options).items() if name in search.space}
    return next(
        (
            trial
            for trial in search.study.get_trials(deepcopy=False)
            if trial.params == given and trial.state.is_finished()
        ),
        None,
    )


def finish_search(search: Search, tokenizer, dataset, names: list[str]) -> tuple[dict, object]:
    """The chosen configuration's model in OUTPUT_DIR/best (its trial's, or with --ensemble K a K-seed ensemble of
    it), scored once on test, beside trial 0's and the baseline's; results.json's content and the card."""
    options, layout = search.options, RunLayout(search.options.output_dir)
    chosen, given = chosen_trial(search.study), given_trial(search)
    chosen_options = search.trial_options(chosen.params, chosen.number)
    chosen_run = (
        retrain_ensemble(options, chosen_options) if options.ensemble else reachable_run(chosen, chosen_options)
    )
    run = json.loads(RunLayout(chosen_run).results.read_text())
    with atomic_directory(layout.best) as temporary:
        shutil.copytree(RunLayout(chosen_run).best, temporary, dirs_exist_ok=True)
    tuned = (
        {"validation": run["validation"], "test": run["test"]}
        if options.ensemble
        else saved_scores(options, layout.best, tokenizer, dataset, names, "chosen")
    )
    task, metric, seed = TASKS[options.task], options.metric_for_best_model, options.data_seed
    baseline = (
        None if options.no_baseline else fit_baseline(task, dataset, tokenizer.letters, names, metric, seed).record
    )
    results = {
        "metric_for_best_model": options.metric_for_best_model,
        **tuned,
        "best_epoch": run.get("best_epoch"),
        "tuned": {"trial": chosen.number, "params": chosen.params, "ensemble_size": options.ensemble, **tuned},
        "default": given_scores(options, given, tokenizer, dataset, names),
        "baseline": baseline,
        "search": search_record(search),
        "num_parameters": run.get("num_parameters"),
        **run_record(
            options,
            {key: file_sha256(path) for key in INPUT_FILES if (path := getattr(options, key)) and os.path.isfile(path)},
        ),
    }
    if options.ensemble:
        return results, (layout.best / "README.md").read_text()
    card_results = {**run, **tuned, "baseline": baseline}
    protocol = describe_protocol(chosen_options, run) + (
        f" Its hyperparameters were chosen by validation {options.metric_for_best_model} among "
        f"{len(search.study.trials)} trials of an "
        "Optuna search (TPE sampler, median pruning); the test split was scored once, for the chosen trial."
    )
    model = TASKS[options.task].model_class.from_pretrained(layout.best)
    card = run_card(options, model, tokenizer, card_results, dataset, protocol)
    write_text(layout.best / "README.md", str(card))
    return results, card


def retrain_ensemble(options: TrainOptions, chosen_options: TrainOptions) -> Path:
    """With --tune N --ensemble K: the chosen configuration trained as a K-seed ensemble (the user's own validation
    rule, processes and threads), in OUTPUT_DIR/ensemble; its folder."""
    folder = Path(options.output_dir) / RunLayout.ENSEMBLE
    ensemble = dataclasses.replace(
        chosen_options, output_dir=str(folder), ensemble=options.ensemble, quiet=options.quiet,
        ensemble_validation=options.ensemble_validation, num_processes=options.num_processes, threads=options.threads,
    )  # fmt: skip
    train_ensemble(ensemble)
    return folder


def reachable_run(trial, options: TrainOptions) -> Path:
    """The chosen trial's run folder; when it ran on another machine (a shared --tune-storage), its configuration
    trained again here, in this process's folder for that trial."""
    folder = Path(trial.user_attrs["folder"])
    if RunLayout(folder).results.is_file():
        return folder
    print(
        f"lyra-train: trial {trial.number} ran where {folder} is not reachable; training its configuration here.",
        file=sys.stderr,
    )
    train(options, hooks=RunHooks(score_test=False))
    return Path(options.output_dir)


def saved_scores(options: TrainOptions, folder: Path, tokenizer, dataset, names: list[str], description: str) -> dict:
    """Validation and test metrics of the model saved in `folder`."""
    model = TASKS[options.task].model_class.from_pretrained(folder)
    return score_saved_models(options, [model], tokenizer, dataset, names, description)


def given_scores(options: TrainOptions, trial, tokenizer, dataset, names: list[str]) -> dict | None:
    """Trial 0's model (the configuration the options give) scored on validation and test, for comparison."""
    if trial is None:
        return None
    record = {
        "trial": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "validation": None,
        "test": None,
    }
    best = RunLayout(trial.user_attrs["folder"]).best
    if (best / "config.json").is_file():
        record.update(saved_scores(options, best, tokenizer, dataset, names, f"trial {trial.number}"))
    return record


def search_record(search: Search) -> dict:
    """How the search ran, for results.json (a database URL without its password)."""
    states = [
        trial.state.name
        for trial in search.study.get_trials(deepcopy=False)
        if not {"interrupted", "surplus"} & set(trial.user_attrs)
    ]
    return {
        "trials": len(states),
        **{state.lower(): states.count(state) for state in sorted(set(states))},
        "parallel_trials": search.parallel,
        "trial_budget_minutes": search.trial_minutes,
        "study": search.study.study_name,
        "storage": redact(search.storage),
        "search_space": {name: dataclasses.asdict(space) for name, space in search.space.items()},
    }


def tuned_line(options: TrainOptions, results: dict) -> str:
    """The closing line of a search."""
    metric, split = options.metric_for_best_model, "test" if results["test"] else "validation"
    default = (results["default"] or {}).get(split) or {}
    chosen = (
        f"{options.ensemble} seeds of trial {results['tuned']['trial']}"
        if options.ensemble
        else f"trial {results['tuned']['trial']}"
    )
    baseline = (results["baseline"] or {}).get(split)
    beside = f"; {results['baseline']['name']} {format_metric(baseline.get(metric))}" if baseline else ""
    return (
        f"tuned over {results['search']['trials']} trials, chosen {chosen}: {split} {metric} "
        f"{format_metric(results[split][metric])} "
        f"(default configuration {format_metric(default.get(metric))}{beside}); model and tokenizer in "
        f"{RunLayout(options.output_dir).best}"
    )
