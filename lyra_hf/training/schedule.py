"""The learning-rate schedule, and the time budget (`--max-train-minutes`) that sizes it."""

import math

import torch


# Without --epochs: DEFAULT_EPOCHS passes over the data, and at least DEFAULT_MIN_STEPS optimizer steps, so that a few
# hundred variants get as many updates as a few thousand (BENCHMARKS.md, "Default schedule").
DEFAULT_EPOCHS = 25
DEFAULT_MIN_STEPS = 2_000
# With --max-train-minutes and without --epochs the budget alone sizes the schedule: no other bound.
UNBOUNDED_STEPS = 10**9
# Steps timed before `--max-train-minutes` sizes the schedule (fewer when an epoch is shorter).
BUDGET_MEASURED_STEPS = 10
# The shares of --max-train-minutes after which, at an epoch's end, the schedule is sized again from the epochs' cost.
BUDGET_RESIZE_SHARES = (0.1, 0.5)
# The share of --max-train-minutes a schedule aims to fill, leaving the rest for the last epoch's validation and
# checkpoint and for the speed's noise.
BUDGET_SHARE = 0.95
# A validation batch costs about a third of a training step (a forward pass without the backward and the optimizer).
EVALUATION_STEP_FRACTION = 1 / 3


class LearningRateSchedule:
    """The learning-rate factor at each step: linear warm-up over `warmup_ratio` of `steps` optimizer steps, then
    cosine or linear decay to 0 at the last step ("constant": 1 throughout, without warm-up, as in transformers). Its
    length `steps` may change while it runs: `--max-train-minutes` sizes it from the speed of the first steps.
    Accelerate steps a scheduler once per process for each optimizer step, so `scheduler_step` counts `processes` per
    optimizer step."""

    def __init__(self, kind: str, warmup_ratio: float, steps: int, processes: int = 1):
        self.kind, self.warmup_ratio, self.steps, self.processes = kind, warmup_ratio, steps, processes

    def __call__(self, scheduler_step: int) -> float:
        if self.kind == "constant":
            return 1.0
        step, warmup = scheduler_step // self.processes, int(self.warmup_ratio * self.steps)
        if step < warmup:
            return step / warmup
        progress = min(1.0, (step - warmup) / max(1, self.steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress


def planned_steps(epochs: int | None, steps_per_epoch: int) -> int:
    """The optimizer steps a run plans before it starts: `epochs` passes, or the default rule. With
    --max-train-minutes the first steps' speed then sizes the schedule (`budgeted_steps`)."""
    if epochs is not None:
        return epochs * steps_per_epoch
    return max(DEFAULT_EPOCHS * steps_per_epoch, DEFAULT_MIN_STEPS)


def budgeted_steps(
    max_train_minutes: float, accelerator, steps_done: int, planned: int, elapsed: float, seconds_per_step: float, steps_per_epoch: int, validation_batches: int
) -> int:
    """The optimizer steps that fit in `max_train_minutes`, `elapsed` seconds of it spent, from the time a step takes
    and the validation pass that ends each epoch, at most `planned` (`planned_steps` with --epochs, else
    `UNBOUNDED_STEPS`); every process takes the smallest estimate, so that all stop at the same step."""
    epoch_overhead = 1 + validation_batches * EVALUATION_STEP_FRACTION / steps_per_epoch
    remaining = 60 * max_train_minutes * BUDGET_SHARE - elapsed
    fit = steps_done + int(remaining / (seconds_per_step * epoch_overhead))
    estimate = torch.tensor([max(steps_done, min(planned, fit))], device=accelerator.device)
    return int(accelerator.gather(estimate).min())


def resized_steps(
    max_train_minutes: float, accelerator, steps_done: int, planned: int, elapsed: float, train_seconds: float, epochs_done: int, steps_per_epoch: int
) -> int:
    """The optimizer steps that fit in `max_train_minutes` once `epochs_done` epochs have taken `elapsed` seconds, of
    which `train_seconds` trained: each further step costs a training step, and each epoch's end (the last, partial
    epoch's too) costs what validation and the checkpoint cost so far on average; at most `planned`, and the smallest
    estimate of every process."""
    seconds_per_step = train_seconds / steps_done
    epoch_end = max(0.0, elapsed - train_seconds) / epochs_done
    remaining = 60 * max_train_minutes * BUDGET_SHARE - elapsed - epoch_end
    fit = steps_done + int(max(0.0, remaining) / (seconds_per_step + epoch_end / steps_per_epoch))
    estimate = torch.tensor([max(steps_done, min(planned, fit))], device=accelerator.device)
    return int(accelerator.gather(estimate).min())
