"""Training Lyra, the library behind `lyra-train`:

    options.py           TrainOptions: every option, its help text and its checks
    setup.py             tokenizer, configuration, model, optimizer groups
    inputs.py            the splits, the checks only training needs, the batches
    schedule.py          the learning-rate schedule and the steps a run plans
    budget.py            --max-train-minutes: sizes the schedule, resizes it, ends it at the deadline
    loop.py              fit(): train_one_epoch() and evaluate(), per epoch
    state.py             checkpoints, the best model, resuming
    results.py           test score, results.json, model card, Hub push, closing line
    runs.py              one run: here, in a torch.distributed job, or over this machine's CPUs
    components.py        a new model's optional parts, chosen from the data
    candidates.py        the plain and the full model side by side, the one validation supports kept
    cross_validation.py  one run per fold
    ensembles.py         one run per seed, saved together
    tuning.py            --tune: the search, then the chosen configuration scored, saved and compared
    search.py            the Optuna study, its search space, and trials run side by side
    tuning_report.py     the search's trials.csv and tuning.png

`run(TrainOptions(...))` does what `lyra-train` does with the same options and returns its closing line.
"""

from .candidates import train_one
from .cross_validation import cross_validate
from .ensembles import train_ensemble
from .inputs import memory_bound_max_length
from .loop import evaluate
from .options import (
    DataOptions,
    ModelOptions,
    OptimizationOptions,
    OptionsError,
    RunOptions,
    SharingOptions,
    TrainOptions,
)
from .runs import TrainingRun, train
from .schedule import LearningRateSchedule
from .search import SEARCH_SPACE
from .setup import build_model, build_tokenizer, parameter_groups
from .state import check_rerun_inputs
from .tuning import tune


def run(options: TrainOptions) -> str | None:
    """Search hyperparameters (`--tune`), cross-validate (`--fold-column`), train an ensemble (`--ensemble`), or train
    once; the closing line. A rerun of an options.json first checks that its inputs are its run's."""
    check_rerun_inputs(options)
    if options.tune:
        return tune(options)
    if options.fold_column and options.test_fold is None:
        return cross_validate(options)
    return train_ensemble(options) if options.ensemble else train_one(options)


__all__ = [
    "DataOptions",
    "LearningRateSchedule",
    "ModelOptions",
    "OptimizationOptions",
    "OptionsError",
    "RunOptions",
    "SEARCH_SPACE",
    "SharingOptions",
    "TrainOptions",
    "TrainingRun",
    "build_model",
    "build_tokenizer",
    "evaluate",
    "memory_bound_max_length",
    "parameter_groups",
    "run",
    "train",
]
