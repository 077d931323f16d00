"""The time budget, `--max-train-minutes`: it sizes the schedule from the first steps' speed, sizes it again from the
first epochs' whole cost, and ends it early should the steps slow down after that (a machine that got busier).

The budget is the run's wall time: from the run's start (reading the data, the baseline and start fits, building the
model; for lyra-train's own CPU processes, starting them) to its results (the test split scored once), so the
training loop gets what the rest leaves. Python's start and the imports before the run are not counted."""

import time

import torch
from accelerate.utils import broadcast

from .schedule import planned_steps


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


def budgeted_steps(
    loop_seconds: float,
    accelerator,
    steps_done: int,
    planned: int,
    elapsed: float,
    seconds_per_step: float,
    steps_per_epoch: int,
    validation_batches: int,
) -> int:
    """The optimizer steps that fit in the loop's `loop_seconds`, `elapsed` seconds of it spent, from the time a step
    takes and the validation pass that ends each epoch, at most `planned` (`planned_steps` with --epochs, else
    `UNBOUNDED_STEPS`); every process takes the smallest estimate, so that all stop at the same step."""
    epoch_overhead = 1 + validation_batches * EVALUATION_STEP_FRACTION / steps_per_epoch
    remaining = loop_seconds * BUDGET_SHARE - elapsed
    fit = steps_done + int(remaining / (seconds_per_step * epoch_overhead))
    estimate = torch.tensor([max(steps_done, min(planned, fit))], device=accelerator.device)
    return int(accelerator.gather(estimate).min())


def resized_steps(
    loop_seconds: float,
    accelerator,
    steps_done: int,
    planned: int,
    elapsed: float,
    train_seconds: float,
    epochs_done: int,
    steps_per_epoch: int,
) -> int:
    """The optimizer steps that fit in the loop's `loop_seconds` once `epochs_done` epochs have taken `elapsed`
    seconds, of
    which `train_seconds` trained: each further step costs a training step, and each epoch's end (the last, partial
    epoch's too) costs what validation and the checkpoint cost so far on average; at most `planned`, and the smallest
    estimate of every process."""
    seconds_per_step = train_seconds / steps_done
    epoch_end = max(0.0, elapsed - train_seconds) / epochs_done
    remaining = loop_seconds * BUDGET_SHARE - elapsed - epoch_end
    fit = steps_done + int(max(0.0, remaining) / (seconds_per_step + epoch_end / steps_per_epoch))
    estimate = torch.tensor([max(steps_done, min(planned, fit))], device=accelerator.device)
    return int(accelerator.gather(estimate).min())


class TimeBudget:
    """One run's `--max-train-minutes`, on the main process's clock: every process then sizes, resizes and ends the
    schedule at the same step, as the collectives they meet there require. `state["schedule_steps"]` holds the
    schedule's length; a run resumed from a checkpoint keeps it, and counts the time its checkpoint had spent."""

    def __init__(self, options, accelerator, parts, state: dict):
        self.minutes, self.epochs, self.accelerator, self.parts, self.state = (
            options.max_train_minutes,
            options.epochs,
            accelerator,
            parts,
            state,
        )
        self.sized = not self.minutes or state["epoch"] > 0
        # A resumed run keeps the schedule its checkpoint holds: only the process that ran the first epoch resizes.
        self.keeps_schedule, self.resizes, self.first_epoch = self.sized, 0, state["epoch"]
        self.started, self.spent_before = time.monotonic(), state.get("fit_seconds", 0.0)
        self.before_loop = self.main_process_value(max(0.0, time.time() - parts.started)) if self.minutes else 0.0
        self.steps_started = None  # the first training step's start: what came before (epoch 0's validation) is no step
        self.epoch_ends: list[float] = []  # seconds each validation (and checkpoint) took in this process
        self.validation_batch_seconds: float | None = None  # what a validation batch costs, measured

    def loop_seconds(self, seconds_per_step: float) -> float:
        """What the budget leaves the training loop: less what the run spent before it (and, resumed, the loop's
        earlier time) and what the run does after it: scoring the test split (a validation batch's measured cost per
        test batch, or before one is measured, a third of a step's), and loading the best model and writing the
        results and the card, taken to cost what an epoch's end (saving the model and a checkpoint) has cost."""
        loaders = self.parts.eval_loaders
        per_batch = self.validation_batch_seconds or EVALUATION_STEP_FRACTION * seconds_per_step
        after_loop = per_batch * len(loaders["test"]) if "test" in loaders else 0.0
        after_loop += max(self.epoch_ends, default=0.0)
        return 60 * self.minutes - self.spent_before - self.before_loop - after_loop

    def main_process_value(self, value: float) -> float:
        """`value` as the main process has it."""
        if self.accelerator.num_processes == 1:
            return value
        return float(broadcast(torch.tensor([value], device=self.accelerator.device, dtype=torch.float64))[0])

    def elapsed(self) -> float:
        return self.main_process_value(time.monotonic() - self.started)

    def after_step(self, step_seconds: float) -> None:
        """After each optimizer step: size the schedule once the first steps are timed, and end it at this step when
        one more step and the epoch's end would overrun the budget."""
        state = self.state
        self.steps_started = self.steps_started or time.monotonic() - step_seconds
        if not self.minutes:
            return
        if not self.sized and state["steps"] == min(BUDGET_MEASURED_STEPS, self.parts.steps_per_epoch):
            self.size_schedule()
        elif self.sized and self.steps_left() and self.past_deadline(step_seconds):
            state["deadline_cut_schedule_steps"] = self.parts.schedule.steps
            self.parts.schedule.steps = state["schedule_steps"] = state["steps"]

    def steps_left(self) -> bool:
        return self.state["steps"] < self.parts.schedule.steps

    def past_deadline(self, step_seconds: float) -> bool:
        """Whether the next step, then this epoch's validation and checkpoint (what they have cost so far, or before
        the first, a third of a step per validation batch), would end past the budget."""
        validation = len(self.parts.eval_loaders["validation"]) * EVALUATION_STEP_FRACTION * step_seconds
        epoch_end = max(self.epoch_ends) if self.epoch_ends else validation
        projected_end = time.monotonic() - self.started + step_seconds + epoch_end
        return self.main_process_value(projected_end) > self.loop_seconds(step_seconds)

    def size_schedule(self) -> None:
        parts, state = self.parts, self.state
        seconds_per_step = (time.monotonic() - self.steps_started) / state["steps"]
        cap = parts.schedule.steps if self.epochs else UNBOUNDED_STEPS  # without --epochs, the budget alone
        state["schedule_steps"] = budgeted_steps(
            self.loop_seconds(seconds_per_step),
            self.accelerator,
            state["steps"],
            cap,
            self.elapsed(),
            seconds_per_step,
            parts.steps_per_epoch,
            len(parts.eval_loaders["validation"]),
        )
        parts.schedule.steps, self.sized = state["schedule_steps"], True

    def epoch_ended(self, seconds: float) -> None:
        """An epoch's validation and checkpoint (or epoch 0's validation) took `seconds`."""
        self.epoch_ends.append(seconds)

    def validated(self, seconds: float) -> None:
        """A validation pass took `seconds` (what the test split's scoring is estimated from)."""
        self.validation_batch_seconds = self.main_process_value(
            seconds / max(1, len(self.parts.eval_loaders["validation"]))
        )

    def resize(self) -> bool:
        """At the first epoch's end past each of `BUDGET_RESIZE_SHARES` of the budget, size the schedule again from
        what the epochs so far cost: their training steps, and their validations and checkpoints, which the first
        steps alone leave out (many short epochs make them a large part of a run). The last resize comes at half the
        budget, so that the last checkpoints hold the final schedule, which a resumed run keeps. Whether it resized."""
        parts, state = self.parts, self.state
        if not self.minutes or self.keeps_schedule or state["epoch"] < 1:
            return False
        elapsed = self.elapsed()
        due = [share for share in BUDGET_RESIZE_SHARES if elapsed >= share * 60 * self.minutes]
        if len(due) <= self.resizes:
            return False
        cap = UNBOUNDED_STEPS if self.epochs is None else planned_steps(self.epochs, parts.steps_per_epoch)
        epochs = state["epoch"] - self.first_epoch
        loop_seconds = self.loop_seconds(state["train_seconds"] / max(1, state["steps"]))
        state["schedule_steps"] = resized_steps(
            loop_seconds,
            self.accelerator,
            state["steps"],
            cap,
            elapsed,
            state["train_seconds"],
            epochs,
            parts.steps_per_epoch,
        )
        parts.schedule.steps, self.resizes = state["schedule_steps"], len(due)
        return True
