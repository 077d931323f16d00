"""The learning-rate schedule, and the optimizer steps a run plans (`budget.py` sizes it to `--max-train-minutes`)."""

import math


# Without --epochs: DEFAULT_EPOCHS passes over the data, and at least DEFAULT_MIN_STEPS optimizer steps, so that a few
# hundred variants get as many updates as a few thousand (BENCHMARKS.md, "Default schedule").
DEFAULT_EPOCHS = 25
DEFAULT_MIN_STEPS = 2_000


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
    --max-train-minutes the first steps' speed then sizes the schedule (`budget.py`)."""
    if epochs is not None:
        return epochs * steps_per_epoch
    return max(DEFAULT_EPOCHS * steps_per_epoch, DEFAULT_MIN_STEPS)
