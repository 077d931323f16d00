"""What a `--tune` search shows: `trials.csv` (every trial's parameters, validation metric, state and time) and
`tuning.png` (the validation metric by trial, and how much each parameter mattered)."""

import csv
import io
from pathlib import Path

from ..outputs import atomic_file, write_text


def write_trials_table(study, path: Path, metric: str) -> None:
    """trials.csv, one row per trial in the order begun; the metric is the best validation value the trial reached
    (for a pruned one, when it was stopped)."""
    trials = [trial for trial in study.get_trials(deepcopy=False) if not trial.user_attrs.get("surplus")]  # never ran
    names = sorted({name for trial in trials for name in trial.params})
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["trial", "state", f"validation_{metric}", "seconds", "budget_minutes", *names, "note"])
    for trial in trials:
        value = trial.value if trial.value is not None else best_reported(trial)
        note = (
            "interrupted; run again as a later trial"
            if trial.user_attrs.get("interrupted")
            else trial.user_attrs.get("error", "")
        )
        writer.writerow(
            [
                trial.number,
                trial.state.name,
                value,
                trial.user_attrs.get("seconds"),
                trial.user_attrs.get("budget_minutes"),
                *(trial.params.get(name) for name in names),
                note,
            ]
        )
    write_text(path, table.getvalue())


def best_reported(trial) -> float | None:
    """A trial's last reported value (reports are its best so far), for one that did not complete."""
    values = trial.intermediate_values
    return values[max(values)] if values else None


def plot_search(study, path: Path, metric: str) -> Path:
    """tuning.png: left, each trial's validation metric in trial order (pruned trials hollow) with the best so far;
    right, the parameters' importances (Optuna's fANOVA), once three trials have completed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.ticker import MaxNLocator
    from optuna.trial import TrialState

    figure, (by_trial, importance) = plt.subplots(1, 2, figsize=(11, 4))
    complete = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.COMPLETE]
    pruned = [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.state == TrialState.PRUNED and trial.intermediate_values
    ]
    by_trial.scatter([trial.number for trial in complete], [trial.value for trial in complete], label="complete")
    by_trial.scatter(
        [trial.number for trial in pruned],
        [best_reported(trial) for trial in pruned],
        facecolors="none",
        edgecolors="grey",
        label="pruned",
    )
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best, running = None, []
    for trial in complete:
        best = trial.value if best is None else better(best, trial.value)
        running.append(best)
    by_trial.step([trial.number for trial in complete], running, where="post", color="black", label="best so far")
    by_trial.set_xlabel("trial")
    by_trial.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers
    by_trial.set_ylabel(f"validation {metric}")
    by_trial.legend()
    if len(complete) >= 3:
        importances = optuna.importance.get_param_importances(study)
        importance.barh(list(importances)[::-1], list(importances.values())[::-1])
        importance.set_xlabel("importance (fANOVA)")
    else:
        importance.text(0.5, 0.5, "importances need 3 complete trials", ha="center", va="center")
        importance.set_axis_off()
    figure.tight_layout()
    with atomic_file(path) as temporary:
        try:
            figure.savefig(temporary, format="png", dpi=120)
        finally:
            plt.close(figure)
    return path
