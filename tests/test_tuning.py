"""`lyra-train --tune N`: trials in parallel processes, the choice by validation, test scored once, resuming a killed
search, two processes sharing one study, and the one-line refusal without Optuna."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from lyra_hf.train import main
from lyra_hf.training.search import PROGRESS_STEPS, PruningReporter


pytest.importorskip("optuna")
REPO = Path(__file__).resolve().parents[1]
# Small trials: the search space sets the architecture, so the data and epochs keep each trial to seconds.
SMALL = ["--max-train-samples", "300", "--max-eval-samples", "101", "--epochs", "2", "--site-effects", "off", "--quiet"]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def trials_table(folder: Path) -> list[dict]:
    with open(folder / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def launch(*flags, cpus: str = "0") -> subprocess.Popen:
    """lyra-train in a process of its own, on the CPUs `cpus` (one CPU: one trial at a time)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = ["taskset", "-c", cpus, sys.executable, "-m", "lyra_hf.train", *flags]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=REPO
    )


def study_trials(storage: str):
    import optuna

    from lyra_hf.training.search import open_storage

    opened = (
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        if "://" not in storage
        else open_storage(storage)
    )
    (name,) = optuna.get_all_study_names(opened)
    return optuna.load_study(study_name=name, storage=opened).get_trials()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs for two trials at once")
def test_tune_runs_trials_side_by_side_chooses_on_validation_and_scores_test_once(tmp_path, capsys):
    assert main([*SMALL, "--tune", "4", "--output-dir", str(tmp_path)]) == 0
    trials = trials_table(tmp_path)
    assert [row["trial"] for row in trials] == ["0", "1", "2", "3"]
    complete = [row for row in trials if row["state"] == "COMPLETE"]
    chosen = max(complete, key=lambda row: float(row["validation_spearmanr"]))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tuned"]["trial"] == int(chosen["trial"]) and results["search"]["parallel_trials"] == 2
    # Trial 0 is the configuration the flags give (here the defaults).
    assert (
        results["default"]["trial"] == 0
        and results["default"]["params"]["learning_rate"] == 3e-3
        and results["default"]["params"]["hidden_size"] == 64
    )
    # Trials never score test; the chosen model does, once, as the model in best/ scores it.
    for row in trials:
        trial_results = Path(tmp_path / "trials" / f"trial_{row['trial']}" / "results.json")
        assert not trial_results.exists() or json.loads(trial_results.read_text())["test"] is None
    assert results["validation"]["spearmanr"] == pytest.approx(float(chosen["validation_spearmanr"]), abs=1e-6)
    assert (
        results["test"]["spearmanr"] is not None
        and results["default"]["test"] is not None
        and results["baseline"]["test"]
    )
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "best")
    assert model.config.hidden_size == results["tuned"]["params"]["hidden_size"]
    # Two trials ran at once, each in a process of its own.
    processes = {trial.user_attrs["process"] for trial in study_trials(str(tmp_path / "tuning.journal"))}
    assert len(processes) == 2 and os.getpid() not in processes
    assert (tmp_path / "tuning.png").stat().st_size > 0
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert closing.startswith("tuned over 4 trials, chosen trial") and "default configuration" in closing


def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    flags = [*SMALL, "--tune", "3", "--output-dir", str(tmp_path)]
    search = launch(*flags)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and search.poll() is None:
        if (tmp_path / "trials.csv").exists() and any(row["state"] == "COMPLETE" for row in trials_table(tmp_path)):
            break
        time.sleep(0.2)
    assert search.poll() is None, search.communicate()
    search.send_signal(signal.SIGKILL)
    search.wait()
    first = trials_table(tmp_path)
    finished = [row for row in first if row["state"] == "COMPLETE"]
    trial_0_results = (tmp_path / "trials" / "trial_0" / "results.json").stat().st_mtime_ns

    resumed = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "lyra_hf.train", *flags, "--resume-from-checkpoint", "latest"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr
    after = trials_table(tmp_path)
    for row in finished:  # kept as they were, not run again
        assert after[int(row["trial"])] == row
    assert (tmp_path / "trials" / "trial_0" / "results.json").stat().st_mtime_ns == trial_0_results
    interrupted = [row for row in after if row["note"].startswith("interrupted")]
    counted = [row for row in after if not row["note"].startswith("interrupted")]
    assert len(counted) == 3 and all(row["state"] in ("COMPLETE", "PRUNED") for row in counted)
    assert len(interrupted) <= 1
    for row in interrupted:  # run again, as a later trial, with the parameters it had drawn
        # A kill can land while the trial draws its parameters (it comes the moment the first trial completes, when
        # the next is asked): those not drawn yet are empty cells, and the rerun draws them afresh.
        parameters = {
            key: value
            for key, value in row.items()
            if key not in ("trial", "state", "validation_spearmanr", "seconds", "budget_minutes", "note") and value
        }
        assert any(
            {key: rerun[key] for key in parameters} == parameters
            for rerun in counted
            if int(rerun["trial"]) > int(row["trial"])
        )


def test_two_processes_sharing_a_tune_storage_split_the_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searches = [
        launch(
            *SMALL,
            "--tune",
            "4",
            "--tune-storage",
            storage,
            "--output-dir",
            str(tmp_path / name),
            cpus=str(index % len(os.sched_getaffinity(0))),
        )
        for index, name in enumerate("ab")
    ]
    for search in searches:
        _, stderr = search.communicate(timeout=400)
        assert search.returncode == 0, stderr
    counted = [trial for trial in study_trials(storage) if not trial.user_attrs.get("surplus")]
    assert len(counted) == 4 and all(trial.state.is_finished() for trial in counted)
    folders = {Path(trial.user_attrs["folder"]).parent.parent.name for trial in counted}
    assert folders == {"a", "b"}, "each process should have run trials of the one study"
    results = [json.loads((tmp_path / name / "results.json").read_text()) for name in "ab"]
    assert results[0]["tuned"]["trial"] == results[1]["tuned"]["trial"]  # both chose the study's best


def test_tune_without_optuna_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(SystemExit) as exit_:
        main([*SMALL, "--tune", "2", "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and 'pip install "lyra-hf[tune]"' in error[0]
    assert not any(tmp_path.iterdir())


class FakeTrial:
    def __init__(self, prune_at: int | None = None):
        self.reports, self.prune_at = [], prune_at

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune_at is not None and self.reports[-1][0] >= self.prune_at


def test_trials_report_their_best_so_far_at_each_tenth_of_their_schedule():
    import optuna

    trial = FakeTrial()
    reporter = PruningReporter(trial)
    reporter(0.1, 0.05)  # step 0: before the first tenth
    reporter(0.3, 0.25)  # tenths 1 and 2 reached at once
    reporter(0.3, 0.29)  # no new tenth: nothing to report
    reporter(0.5, 1.0)
    assert trial.reports == [(0, 0.1), (1, 0.3), (2, 0.3), *((step, 0.5) for step in range(3, PROGRESS_STEPS + 1))]
    pruned = PruningReporter(FakeTrial(prune_at=3))
    pruned(0.2, 0.2)
    with pytest.raises(optuna.TrialPruned):
        pruned(0.2, 0.4)


def test_tune_with_an_ensemble_retrains_the_chosen_configuration_with_k_seeds(tmp_path):
    """`--tune 2 --ensemble 2` on a training file: the trials validate on one carved split; the chosen configuration
    is then trained with 2 seeds, each member on its own tenth (the ensembles' default there), and saved together."""
    from lyra_hf.data import synthetic_fitness_dataset

    data = synthetic_fitness_dataset(num_train=300, num_validation=1, num_test=40, seed=2)
    for split in ("train", "test"):
        rows = data[split]
        (tmp_path / f"{split}.csv").write_text(
            "sequence,fitness\n"
            + "".join(f"{sequence},{labels[0]}\n" for sequence, labels in zip(rows["sequence"], rows["labels"]))
        )
    output = tmp_path / "tuned"
    flags = [
        "--train-file",
        str(tmp_path / "train.csv"),
        "--test-file",
        str(tmp_path / "test.csv"),
        "--label-columns",
        "fitness",
        *SMALL[4:],
    ]
    assert main([*flags, "--tune", "2", "--ensemble", "2", "--output-dir", str(output)]) == 0
    results = json.loads((output / "results.json").read_text())
    chosen = results["tuned"]["params"]
    assert json.loads((output / "best" / "ensemble.json").read_text())["seeds"] == [
        42,
        43,
    ]  # the default --seed, and the next
    for index in range(2):
        member = json.loads((output / "ensemble" / f"member_{index}" / "options.json").read_text())
        assert member["validation_part"] == index and member["hidden_size"] == chosen["hidden_size"]
        assert member["learning_rate"] == pytest.approx(chosen["learning_rate"])
    assert all(
        json.loads((output / "trials" / name / "options.json").read_text())["validation_part"] == 0
        for name in ("trial_0", "trial_1")
    )
    assert results["test"]["spearmanr"] is not None
