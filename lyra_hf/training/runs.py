"""One run of lyra-train: in this process, as one process of a torch.distributed job (`accelerate launch`, torchrun),
or spread by lyra-train itself over this machine's CPUs, one single-threaded process each (see `lyra_hf.cpu`)."""

import dataclasses
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, patch_environment, set_seed
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .. import cli
from ..baseline import fit_baseline, score_prior
from ..checkpoints import RunLayout
from ..cpu import (
    WorkerError,
    WorkerPool,
    configure_threads,
    launch_on_cpus,
    plan_processes,
    threads_from_environment,
    training_processes,
    usable_cpus,
)
from ..data import SEQUENCE_COLUMN
from ..data.checks import alphabet_hint
from ..outputs import locked_output_dir, remove_outputs, write_json
from ..prior.table import token_table
from ..tasks import TASKS
from .components import Components, choose_components
from .inputs import (
    build_loaders,
    check_metric_name,
    duplicates_note,
    load_data,
    load_prior,
    memory_bound_max_length,
    tokenized_splits,
)
from .loop import RunHooks, RunParts, fit
from .options import TrainOptions
from .results import finish_run, summary_line
from .schedule import LearningRateSchedule, planned_steps
from .setup import build_config, build_model, build_optimizer, build_tokenizer, pretrained_checkpoint, start_model
from .state import check_output_dir, checkpoint_to_resume, new_state, restore_state


@dataclass(frozen=True)
class ProcessShare:
    """One process's part of a run that lyra-train spreads over CPU processes itself: its slice of the global batch,
    the length limit the launching process measured, so that every process reads the same rows, and when the run
    started (`time.time()`), which `--max-train-minutes` counts from."""

    batch_size: int
    max_length: int | None  # None: measured by the process (`memory_bound_max_length`)
    started: float


@dataclass
class TrainingRun:
    """What `train` leaves behind: the results written to results.json, the trained model (unwrapped, best epoch's
    weights not loaded) and the accelerator."""

    results: dict
    model: torch.nn.Module
    accelerator: Accelerator


def train(
    options: TrainOptions, lock: bool = True, share: ProcessShare | None = None, hooks: RunHooks = RunHooks()
) -> TrainingRun:
    """Train in this process, or as one process of a torch.distributed job (RANK/WORLD_SIZE set); `lock=False` when the
    process that launched the job holds the output folder's lock; `hooks` for a trial of a hyperparameter search."""
    share = share or ProcessShare(options.batch_size, None, time.time())
    output_dir = Path(options.output_dir)
    # Several processes on a machine without an accelerator (e.g. `accelerate launch --multi_gpu --num_processes 2` or
    # torchrun on CPUs): accelerate forms the gloo process group only when told to use the CPU, and would otherwise
    # run independent copies of the training.
    several_processes_on_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
    accelerator = Accelerator(
        cpu=several_processes_on_cpu,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        mixed_precision=options.mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=options.seed),
        # Gradients live in DDP's all-reduce buckets rather than being copied in and out of them each step: the same
        # values, one copy fewer (BENCHMARKS.md, "CPU use"). Ignored in a single process.
        kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)],
        log_with=options.report_to,
        project_dir=str(output_dir),
    )
    # The main process writes every output, so it alone holds the folder's lock, for the whole run.
    with locked_output_dir(output_dir) if accelerator.is_main_process and lock else nullcontext():
        return run_training(options, accelerator, output_dir, share, hooks)


def run_training(
    options: TrainOptions, accelerator: Accelerator, output_dir: Path, share: ProcessShare, hooks: RunHooks
) -> TrainingRun:
    """Check, prepare, fit and finish one run; every input is checked before an earlier run's outputs are replaced."""
    if accelerator.is_main_process:
        check_output_dir(options, output_dir)
    accelerator.wait_for_everyone()
    checkpoint = checkpoint_to_resume(options, output_dir)
    set_seed(options.seed)
    parts = prepare_run(options, accelerator, share, hooks.score_test)
    if accelerator.is_main_process:
        start_run_folder(options, output_dir)
    accelerator.wait_for_everyone()
    state = new_state(options)
    if options.resume_from_checkpoint and checkpoint is None and accelerator.is_main_process:
        print(
            f"lyra-train: no checkpoint in {RunLayout(output_dir).checkpoints} yet; starting from scratch.",
            file=sys.stderr,
        )
    if checkpoint is not None:
        state = restore_state(accelerator, checkpoint, parts.ema, state)
    if options.report_to:
        accelerator.init_trackers(RunLayout.LOGS, config=options.tracker_config())
    # A resumed run keeps the schedule it sized; checkpoints from before schedules were sized ran --epochs in full.
    parts.schedule.steps = state.setdefault("schedule_steps", parts.schedule.steps)
    state.setdefault("steps", state["epoch"] * parts.steps_per_epoch)
    fit(options, accelerator, parts, state, output_dir, hooks)
    results = finish_run(options, accelerator, parts, state, output_dir)
    return TrainingRun(results=results, model=accelerator.unwrap_model(parts.model), accelerator=accelerator)


def prepare_run(
    options: TrainOptions, accelerator: Accelerator, share: ProcessShare, score_test: bool = True
) -> RunParts:
    """The tokenizer, data, model, optimizer and schedule of a run, checked and prepared by Accelerate; without
    `score_test` (a search's trial) the test split is left out."""
    tokenizer = build_tokenizer(options)
    config = build_config(options, tokenizer)
    max_length = share.max_length or options.max_length or memory_bound_max_length(config, share.batch_size)
    dataset, names, tokenized, orders = read_run_data(options, accelerator, tokenizer, max_length, score_test)
    model, components, prior_scores = build_run_model(options, tokenizer, names, config, dataset)
    new_model = pretrained_checkpoint(options) is None
    fit_arguments = (
        TASKS[options.task],
        dataset,
        tokenizer.letters,
        names,
        options.metric_for_best_model,
        options.data_seed,
    )
    # Fitted before training, so that --max-train-minutes counts them.
    fit_baselines = accelerator.is_main_process and not options.no_baseline
    baseline, baseline_outputs = baselines(options, fit_arguments, prior_scores) if fit_baselines else (None, {})
    start, start_head = (
        start_model(model, fit_arguments, tokenizer, components, prior_scores) if new_model else (None, None)
    )
    loaders = build_loaders(tokenized, share.batch_size, options, tokenizer)
    optimizer = build_optimizer(model, options, accelerator.device)
    steps_per_epoch = math.ceil(len(loaders["train"]) / accelerator.num_processes / options.gradient_accumulation_steps)
    planned = planned_steps(options.epochs, steps_per_epoch)
    schedule = LearningRateSchedule(options.lr_scheduler, options.warmup_ratio, planned, accelerator.num_processes)
    evaluation = [split for split in loaders if split != "train"]
    model, optimizer, scheduler, train_loader, *eval_loaders = accelerator.prepare(
        model, optimizer, LambdaLR(optimizer, schedule), loaders["train"], *[loaders[split] for split in evaluation]
    )
    ema = None
    if options.ema_decay:
        ema = AveragedModel(accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(options.ema_decay))
    parts = (TASKS[options.task], tokenizer, names, dataset, model, optimizer, scheduler, schedule, train_loader)
    return RunParts(
        *parts, dict(zip(evaluation, eval_loaders)), steps_per_epoch, share.batch_size, ema, baseline,
        baseline_outputs=baseline_outputs, start=start, start_head=start_head,
        components=components.record if new_model else None,
        started=share.started, eval_orders=orders,
    )  # fmt: skip


def read_run_data(options: TrainOptions, accelerator: Accelerator, tokenizer, max_length: int, score_test: bool):
    """The splits, the target or class names, the tokenized splits (without test for a search's trial) and the order
    of each evaluation split's rows; the main process says what it noticed in the data."""
    with accelerator.main_process_first():
        dataset, names = load_data(options, tokenizer, max_length)
        tokenized, orders = tokenized_splits(dataset, tokenizer)
    if not score_test:
        tokenized.pop("test", None)
    elif "test" not in tokenized and accelerator.is_main_process:
        print("lyra-train: no --test-file; results.json will have no test metrics.", file=sys.stderr)
    if accelerator.is_main_process and not options.quiet:
        letters = tokenizer.letters, tokenizer.padding_characters
        for note in (duplicates_note(dataset), alphabet_hint(dataset["train"][SEQUENCE_COLUMN], *letters)):
            if note:
                print(note, file=sys.stderr)
    check_metric_name(options, names)
    return dataset, names, tokenized, orders


def build_run_model(options: TrainOptions, tokenizer, names: list[str], config, dataset):
    """The model a run trains (a new one with the parts `choose_components` picks, and `--prior`'s table, or a
    checkpoint to fine-tune), what was chosen, and each split's prior scores (None without a prior)."""
    new_model = pretrained_checkpoint(options) is None
    prior, prior_scores = load_prior(options, dataset, tokenizer)
    components = choose_components(options, config, dataset["train"]) if new_model else Components()
    if new_model:
        components.apply(config)
        config.prior_length = len(prior.wild_type) if prior else 0
    model = build_model(options, tokenizer, names, config)
    if prior is not None:
        model.prior.table.copy_(torch.as_tensor(token_table(prior, tokenizer)))
    return model, components, prior_scores


def baselines(options: TrainOptions, fit_arguments: tuple, prior_scores: dict | None) -> tuple[dict, dict]:
    """The one-hot baseline's record; with a prior, also the augmented model's (one-hot ridge + the prior's column,
    `with_prior`) and the prior's own scores (`prior_alone`). And their test outputs, by those names (`baseline` for
    the one-hot baseline), for the test predictions file."""
    fit = fit_baseline(*fit_arguments)
    record, test_outputs = fit.record, {"baseline": fit.test_outputs}
    if prior_scores is not None:
        task, dataset, _, names = fit_arguments[:4]
        augmented = fit_baseline(*fit_arguments, prior=prior_scores)
        record = {
            **record,
            "with_prior": augmented.record,
            "prior_alone": score_prior(task, dataset, names, prior_scores),
        }
        test_outputs.update(with_prior=augmented.test_outputs, prior_alone=prior_scores.get("test"))
    return record, test_outputs


def start_run_folder(options: TrainOptions, output_dir: Path) -> None:
    """Replace an earlier run's outputs (with --overwrite-output-dir) and record this run's options.json."""
    if options.overwrite_output_dir and not options.resume_from_checkpoint:
        remove_outputs(output_dir, RunLayout.OUTPUTS)
    write_json(RunLayout(output_dir).options, options.options_file_values())


def train_worker(options: TrainOptions, share: ProcessShare) -> str | None:
    """One process of `train_on_cpus`."""
    configure_threads(1)
    # DDP compares each gradient's strides with its bucket's, also along a dimension of size 1 (the depthwise
    # convolution's (E, 1, 3) weight), where any stride describes the same memory: nothing to warn about.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    training = train(options, lock=False, share=share)
    return summary_line(options, training.results) if training.accelerator.is_main_process else None


def train_on_cpus(options: TrainOptions, processes: int) -> str | None:
    """Train as one torch.distributed job of up to `processes` single-threaded CPU processes. Without
    `--num-processes`, a run whose steps are too small to share out (`training_processes`) keeps one process. The global
    batch stays `--batch-size`, split evenly over the processes, so the run is the one a single process would make (with
    dropout masks drawn per process)."""
    output_dir, started = Path(options.output_dir), time.time()
    with locked_output_dir(output_dir):
        # What could fail in one process and leave the others waiting for it is checked here, once.
        check_output_dir(options, output_dir)
        checkpoint_to_resume(options, output_dir)
        tokenizer = build_tokenizer(options)
        config = build_config(options, tokenizer)
        max_length = options.max_length or memory_bound_max_length(config, options.batch_size)
        dataset, names = load_data(options, tokenizer, max_length)
        check_metric_name(options, names)
        load_prior(options, dataset, tokenizer)
        if options.num_processes is None:
            tokens_per_step = options.batch_size * np.mean(
                [len(sequence) for sequence in dataset["train"][SEQUENCE_COLUMN]]
            )
            processes = training_processes(processes, tokens_per_step, config.hidden_size)
        while options.batch_size % processes:
            processes -= 1
        if processes == 1:
            configure_threads(options.threads or threads_from_environment() or 1)
            return summary_line(
                options, train(options, lock=False, share=ProcessShare(options.batch_size, max_length, started)).results
            )
        try:
            # One thread per process, said in the environment too (accelerate warns when OMP_NUM_THREADS is unset).
            with patch_environment(OMP_NUM_THREADS="1"):
                summaries = launch_on_cpus(
                    train_worker,
                    (options, ProcessShare(options.batch_size // processes, max_length, started)),
                    processes,
                )
        except WorkerError as error:
            if cli.is_expected_error(error.type_name):
                raise ValueError(error.message) from None
            raise RuntimeError(f"a training process failed:\n{error.traceback}") from None
    return summaries[0]


def train_here_or_on_cpus(options: TrainOptions) -> str | None:
    """Train here, or over this machine's CPUs as one process each (see `lyra_hf.cpu`), and the closing line."""
    processes, threads = plan_processes(options.num_processes, options.threads)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # by `accelerate launch` or torchrun: one process of a job
    if processes > 1 and not launched and not torch.accelerator.is_available():
        return train_on_cpus(options, processes)
    configure_threads(threads)
    training = train(options)
    return summary_line(options, training.results) if training.accelerator.is_main_process else None


def train_in_worker(state: dict, job: tuple[TrainOptions, float]) -> str:
    """One run of `train_side_by_side`, in a worker process (single-threaded); `job` is its options and when the
    command that asked for it started."""
    options, started = job
    return summary_line(options, train(options, share=ProcessShare(options.batch_size, None, started)).results)


def train_side_by_side(
    runs: dict[str, TrainOptions], resume: bool, one_at_a_time: bool, started: float | None = None
) -> None:
    """Complete runs (an ensemble's members, the candidates of `candidates.py`), each in its own folder; with `resume`,
    those that finished are kept. On CPUs, unless `one_at_a_time` (--num-processes given), side by side: one
    single-threaded process each, as many at once as there are usable CPUs; otherwise one after another, each as a
    single run would. `started`: when the command started, which each run's --max-train-minutes counts from."""
    pending = [name for name in runs if not (resume and RunLayout(runs[name].output_dir).results.is_file())]
    started = started or time.time()
    side_by_side = min(len(pending), usable_cpus()) if not one_at_a_time and not torch.accelerator.is_available() else 1
    if side_by_side > 1:
        with WorkerPool({}, side_by_side) as workers:
            jobs = [(dataclasses.replace(runs[name], quiet=True), started) for name in pending]
            for name, line in zip(pending, workers.map(train_in_worker, jobs)):
                tqdm.write(f"{name}: {line}")
    else:
        for name in pending:
            tqdm.write(f"{name}: {train_here_or_on_cpus(runs[name])}")
