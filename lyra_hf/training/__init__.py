"""Training Lyra, the library behind `lyra-train`:

    options.py           TrainOptions: every option, its help text and its checks
    setup.py             tokenizer, configuration, model, optimizer groups
    inputs.py            the splits, the checks only training needs, the batches
    schedule.py          the learning-rate schedule and the time budget that sizes it
    loop.py              fit(): train_one_epoch() and evaluate(), per epoch
    state.py             checkpoints, the best model, resuming
    results.py           test score, results.json, model card, Hub push, closing line
    runs.py              one run: here, in a torch.distributed job, or over this machine's CPUs
    cross_validation.py  one run per fold
    ensembles.py         one run per seed, saved together

`run(TrainOptions(...))` does what `lyra-train` does with the same options and returns its closing line.
"""

from .cross_validation import cross_validate
from .ensembles import train_ensemble
from .inputs import memory_bound_max_length
from .loop import evaluate
from .options import DataOptions, ModelOptions, OptimizationOptions, OptionsError, RunOptions, SharingOptions, TrainOptions
from .runs import TrainingRun, train, train_here_or_on_cpus
from .schedule import LearningRateSchedule
from .setup import build_model, build_tokenizer, parameter_groups


def run(options: TrainOptions) -> str | None:
    """Cross-validate (`--fold-column`), train an ensemble (`--ensemble`), or train once; the closing line."""
    if options.fold_column and options.test_fold is None:
        return cross_validate(options)
    return train_ensemble(options) if options.ensemble else train_here_or_on_cpus(options)


__all__ = [
    "DataOptions",
    "LearningRateSchedule",
    "ModelOptions",
    "OptimizationOptions",
    "OptionsError",
    "RunOptions",
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
