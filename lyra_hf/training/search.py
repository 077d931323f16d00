"""The Optuna search behind `lyra-train --tune` (see `tuning.py`): the search space, the study and its storage, and
trials run side by side in worker processes, each reporting to the pruner."""

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoints import RunLayout
from ..configuration_lyra import POOLING_MODES, LyraConfig
from ..cpu import WorkerPool, usable_cpus
from ..metrics import metric_of
from ..tasks import TASKS
from .loop import RunHooks, format_metric
from .options import ModelOptions, OptionsError, TrainOptions
from .runs import train
from .setup import pretrained_checkpoint, read_config_file
from .state import run_settings
from .tuning_report import write_trials_table


@dataclass(frozen=True)
class Range:
    """A number drawn between `low` and `high`, on a log scale when `log`."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial, name: str):
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def including(self, value) -> "Range":
        """The range widened to hold a value the user gave (a log range given 0 becomes linear)."""
        if self.low <= value <= self.high:
            return self
        return Range(min(self.low, value), max(self.high, value), self.log and value > 0)


@dataclass(frozen=True)
class Choice:
    """One of `values`."""

    values: tuple

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, self.values)

    def including(self, value) -> "Choice":
        return self if value in self.values else Choice((*self.values, value))


# What --tune searches, by option name; docs/training.md shows the same table. The bounds hold the values that did well
# on the shared data sets (BENCHMARKS.md, "Tuning"); a value the user gives outside them is added (`Range.including`).
SEARCH_SPACE = {
    "learning_rate": Range(3e-4, 1e-2, log=True),
    "weight_decay": Range(1e-4, 0.3, log=True),
    "dropout": Range(0.0, 0.4),
    "hidden_size": Choice((32, 64, 96, 128)),
    "state_size": Choice((16, 32, 64)),
    "num_s4d_layers": Choice((1, 2, 3)),
    "bidirectional": Choice((False, True)),
    "pooling": Choice(POOLING_MODES),
    "batch_size": Choice((16, 32, 64, 128)),
    "ema_decay": Choice((None, 0.99, 0.999)),
}
# The share of a trial's slice of --max-train-minutes its schedule gets; the rest pays for its start (reading and
# tokenizing the data), its baseline fit and, at the end, the test scoring.
TRIAL_BUDGET_SHARE = 0.9
# A trial reports its best validation value at each tenth of its schedule (see the module's docstring).
PROGRESS_STEPS = 10


def search_space(options: TrainOptions) -> dict:
    """`SEARCH_SPACE` for this run: without the architecture when starting from a pretrained checkpoint (it fixes it),
    without pooling for a per-residue task, each dimension widened to hold the value the options give."""
    fixed = set(ModelOptions.SIZE_FIELDS) if pretrained_checkpoint(options) else set()
    if TASKS[options.task].labels_per_residue:
        fixed.add("pooling")
    defaults = given_configuration(options)
    return {name: space.including(defaults[name]) for name, space in SEARCH_SPACE.items() if name not in fixed}


def given_configuration(options: TrainOptions) -> dict:
    """Trial 0's parameters: each option's value, or where it is unset what the run would use: a --config JSON's
    value, else the task's default (`Task.model_defaults`), else LyraConfig's."""
    config_file = options.config and not pretrained_checkpoint(options)
    config = read_config_file(options.config) if config_file else LyraConfig(**TASKS[options.task].model_defaults)
    return {
        name: getattr(options, name)
        if getattr(options, name) is not None or name == "ema_decay"
        else getattr(config, name)
        for name in SEARCH_SPACE
    }


def study_name(options: TrainOptions) -> str:
    """A name that only searches over the same data with the same options share: their settings' digest."""
    settings = {key: value for key, value in run_settings(options).items() if key not in ("tune", "ensemble")}
    return "lyra-train-" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


# Processes that open a new database at the same moment race to create its tables (an IntegrityError or an
# OperationalError for the loser), and a database server may be briefly busy: the storage is opened again.
STORAGE_ATTEMPTS = 5


def open_storage(location: str):
    """Optuna's storage: a database URL (--tune-storage), or the path of a journal file."""
    import optuna

    if "://" not in location:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(location))
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(location)
        except Exception as error:  # SQLAlchemy's errors: a bad URL, a missing driver, no connection, a race
            if type(error).__name__ in ("IntegrityError", "OperationalError") and attempt + 1 < STORAGE_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1))
                continue
            reason = str(error).strip().splitlines()[0]
            raise ValueError(
                f"--tune-storage {redact(location)}: cannot open the study's database ({type(error).__name__}: "
                f"{reason})"
            ) from None


def redact(url: str) -> str:
    """A database URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


@dataclass(frozen=True)
class TrialJob:
    """What a worker process needs to run one trial: its run's options and where to find it in the study."""

    options: TrainOptions
    storage: str
    study_name: str
    trial_id: int
    metric: str


@dataclass(frozen=True)
class TrialOutcome:
    state: str  # COMPLETE or PRUNED
    value: float | None  # the best validation metric it reached
    seconds: float


class PruningReporter:
    """`RunHooks.on_validation` of a trial: reports the best validation value so far at each tenth of the schedule
    reached (every tenth an epoch jumped over gets the same value) and stops the trial when the pruner says so."""

    def __init__(self, trial):
        self.trial, self.reported, self.best = trial, -1, None

    def __call__(self, best: float | None, progress: float) -> None:
        import optuna

        self.best = best
        step = min(PROGRESS_STEPS, int(progress * PROGRESS_STEPS + 1e-9))
        if best is None or step <= self.reported:
            return
        for reached in range(self.reported + 1, step + 1):
            self.trial.report(best, reached)
        self.reported = step
        if step < PROGRESS_STEPS and self.trial.should_prune():
            raise optuna.TrialPruned()


def run_trial(state: dict, job: TrialJob) -> TrialOutcome:
    """One trial, in a worker process: a lyra-train run without the test split, pruned through the study."""
    import optuna

    study = optuna.load_study(study_name=job.study_name, storage=open_storage(job.storage))
    reporter = PruningReporter(optuna.Trial(study, job.trial_id))
    reporter.trial.set_user_attr("process", os.getpid())
    started = time.monotonic()
    try:
        results = train(job.options, hooks=RunHooks(score_test=False, on_validation=reporter)).results
    except optuna.TrialPruned:
        return TrialOutcome("PRUNED", reporter.best, time.monotonic() - started)
    return TrialOutcome("COMPLETE", results["validation"].get(job.metric), time.monotonic() - started)


@dataclass
class Search:
    """One process's part of a search: the study, what its trials search, how many run at once and each one's budget."""

    options: TrainOptions
    study: object
    storage: str
    space: dict
    parallel: int
    trial_minutes: float | None

    @property
    def output_dir(self) -> Path:
        return Path(self.options.output_dir)

    def trial_options(self, params: dict, number: int) -> TrainOptions:
        """A trial's run: the options with `params`, in its own folder, quiet, single-threaded, without the search's
        own outputs (Hub push, ensemble, baseline)."""
        return dataclasses.replace(
            self.options,
            **params,
            output_dir=str(self.output_dir / RunLayout.TRIALS / f"trial_{number}"),
            tune=None,
            tune_storage=None,
            ensemble=None,
            ensemble_validation=None,
            push_to_hub=None,
            no_baseline=True,
            quiet=True,
            report_to=None,
            resume_from_checkpoint=None,
            overwrite_output_dir=True,
            num_processes=1,
            threads=1,
            max_train_minutes=self.trial_minutes,
        )

    def begun(self) -> list[int]:
        """The numbers of the trials that count towards N: all but those waiting, those a kill interrupted and those
        asked for beyond N."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        return [
            trial.number
            for trial in trials
            if trial.state != TrialState.WAITING and not ({"interrupted", "surplus"} & set(trial.user_attrs))
        ]

    def ask(self, total: int) -> TrialJob | None:
        """The next trial's job, or None when the study already holds `total` trials. Processes sharing a study may
        ask at the same moment: a trial numbered past the first `total` is told failed as surplus and not run."""
        from optuna.trial import TrialState

        trial = self.study.ask()
        if trial.number not in sorted(self.begun())[:total]:
            trial.set_user_attr("surplus", True)
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        params = {name: space.suggest(trial, name) for name, space in self.space.items()}
        trial.set_user_attr("folder", str((self.output_dir / RunLayout.TRIALS / f"trial_{trial.number}").resolve()))
        trial.set_user_attr("budget_minutes", self.trial_minutes)
        options = self.trial_options(params, trial.number)
        return TrialJob(
            options, self.storage, self.study.study_name, trial._trial_id, self.options.metric_for_best_model
        )

    def tell(self, job: TrialJob, outcome: TrialOutcome | None, error: Exception | None) -> None:
        import optuna
        from optuna.trial import TrialState

        trial = optuna.Trial(self.study, job.trial_id)
        trial.set_user_attr("seconds", outcome.seconds if outcome else None)
        if error is not None or outcome.value is None:
            reason = f"{type(error).__name__}: {error}" if error else f"validation {job.metric} undefined"
            trial.set_user_attr("error", reason)
            self.study.tell(trial, state=TrialState.FAIL)
            print(f"lyra-train: trial {trial.number} failed: {reason}", file=sys.stderr)
            return
        state = TrialState.COMPLETE if outcome.state == "COMPLETE" else TrialState.PRUNED
        self.study.tell(trial, outcome.value if state == TrialState.COMPLETE else None, state=state)
        if not self.options.quiet:
            print(
                f"trial {trial.number}: {outcome.state.lower()}, validation {job.metric} "
                f"{format_metric(outcome.value)} ({outcome.seconds:.0f} s)",
                file=sys.stderr,
            )

    def run_trials(self, total: int) -> None:
        """Keep `parallel` trials running until the study holds `total`, telling the study each outcome as it comes and
        rewriting trials.csv."""
        with WorkerPool({}, self.parallel) as workers:
            running = {}
            while True:
                while len(running) < self.parallel and len(self.begun()) < total and (job := self.ask(total)):
                    running[workers.submit(run_trial, job)] = job
                if not running:
                    return
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    error = future.exception()
                    if isinstance(error, KeyboardInterrupt):
                        raise error
                    self.tell(job, None if error else future.result(), error)
                write_trials_table(
                    self.study, self.output_dir / RunLayout.TRIALS_TABLE, self.options.metric_for_best_model
                )


def trial_minutes(options: TrainOptions, parallel: int) -> float | None:
    """Each trial's --max-train-minutes: the search's budget over its rounds of `parallel` trials."""
    if not options.max_train_minutes:
        return None
    return options.max_train_minutes * TRIAL_BUDGET_SHARE / math.ceil(options.tune / parallel)


def open_search(options: TrainOptions) -> Search:
    """The study (created, or continued with --resume-from-checkpoint or by a process sharing --tune-storage), its
    trial 0 queued, the trials a kill interrupted queued again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    output_dir = Path(options.output_dir)
    storage = options.tune_storage or str(output_dir / RunLayout.TUNING_JOURNAL)
    name, opened = study_name(options), open_storage(storage)
    if not options.tune_storage and options.resume_from_checkpoint:
        earlier = optuna.get_all_study_names(opened)
        if earlier and name not in earlier:
            raise OptionsError(
                f"{storage} holds a search made with other options or data; resume it with those, or pass "
                "--overwrite-output-dir"
            )
    parallel = 1 if torch.accelerator.is_available() else max(1, min(options.tune, usable_cpus()))
    metric = options.metric_for_best_model
    study = optuna.create_study(
        study_name=name,
        storage=opened,
        load_if_exists=True,
        direction="maximize" if metric_of(metric).higher_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=min(10, max(2, options.tune // 3))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=parallel, n_warmup_steps=2),
    )
    search = Search(options, study, storage, search_space(options), parallel, trial_minutes(options, parallel))
    if not options.tune_storage:
        requeue_interrupted(study)
    study.enqueue_trial(
        {name: value for name, value in given_configuration(options).items() if name in search.space},
        skip_if_exists=True,
    )
    return search


def requeue_interrupted(study) -> None:
    """Trials left running by a killed search (the output folder's lock says none runs now): marked failed and
    interrupted, and queued again with their parameters."""
    import optuna
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        optuna.Trial(study, trial._trial_id).set_user_attr("interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
