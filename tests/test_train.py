import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lyra_hf.data import synthetic_fitness_dataset
from lyra_hf.predict import main as predict_main
from lyra_hf.train import main, parse_options
from lyra_hf.training import parameter_groups


REPO = Path(__file__).resolve().parents[1]
# A small model and data so that every run takes seconds.
# The synthetic landscape's sequences share one length, which turns site effects on: tests of other mechanisms train
# the authors' model (site effects are tested in test_baseline.py, and by the end-to-end test here).
TINY = [
    "--hidden-size",
    "16",
    "--state-size",
    "8",
    "--max-train-samples",
    "600",
    "--max-eval-samples",
    "101",
    "--batch-size",
    "32",
    "--site-effects",
    "off",
]
TIMING_KEYS = ("train_seconds", "samples_per_second", "fit_seconds", "run_seconds", "checkpoint_seconds")


def what_a_run_computed(results: dict) -> dict:
    """results.json without the timings and how the run was invoked (command line, output folder, resume flag)."""
    results = {key: value for key, value in results.items() if key not in (*TIMING_KEYS, "command")}
    if "baseline" in results:
        results["baseline"] = {key: value for key, value in results["baseline"].items() if key != "seconds"}
    settings = {
        key: value for key, value in results["settings"].items() if key not in ("output_dir", "resume_from_checkpoint")
    }
    return {**results, "settings": settings}


def run_cli(*flags, timeout=300, **popen):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lyra_hf.train", *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=REPO,
    )


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; accelerate keeps its state in a process-wide singleton."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def synthetic_test_spearman(checkpoint: Path, num_test: int, split: str = "test") -> float:
    """Score a saved model on the synthetic test (or another) split in one process, sequence by sequence (no batching,
    no gathering), as the reference for what lyra-train reports."""
    test = synthetic_fitness_dataset(seed=42)[split].select(range(num_test))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        predictions = [model(**tokenizer(sequence, return_tensors="pt")).logits.item() for sequence in test["sequence"]]
    return spearmanr(predictions, [labels[0] for labels in test["labels"]])[0]


def test_end_to_end_on_the_embedded_default(tmp_path):
    """The defaults on the synthetic landscape, a variant library: the plain and the full candidate train side by side
    (one process each), each a complete run; validation does not support the plain model, so the full one (site
    effects started from the linear fit, validation's epoch 0, then two epochs) is kept in `best/`, and results.json
    says so."""
    assert main([*TINY[:-2], "--epochs", "2", "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert {
        "validation",
        "test",
        "best_epoch",
        "num_parameters",
        "train_seconds",
        "samples_per_second",
        "baseline",
    } <= set(results)
    assert results["best_epoch"] in (0, 1, 2) and [entry["epoch"] for entry in results["history"]] == [0, 1, 2]
    assert results["validation"]["num_samples"] == results["test"]["num_samples"] == 101
    assert results["samples_per_second"] > 0 and results["num_processes"] == 1
    choice = results["components"]["candidates"]
    assert choice["chosen"] == choice["favoured"] == "full" and choice["library"]["is_library"]
    views = choice["views"]["all validation rows"]
    assert (
        views["full"] == pytest.approx(results["validation"]["spearmanr"], abs=1e-5)
        and views["plain_better_share"] < 0.95
    )
    best = tmp_path / "best"
    model = AutoModelForSequenceClassification.from_pretrained(best)
    assert results["num_parameters"] == model.num_parameters() and model.config.site_effects_length == 30
    assert model.config.id2label == {0: "fitness"} and model.config.problem_type == "regression"
    assert results["test"]["spearmanr"] == pytest.approx(synthetic_test_spearman(best, 101), abs=1e-6)
    assert (
        load_file(best / "model.safetensors").keys()
        == load_file(tmp_path / "candidates" / "full" / "best" / "model.safetensors").keys()
    )
    plain = json.loads((tmp_path / "candidates" / "plain" / "results.json").read_text())
    assert (
        views["plain"] == pytest.approx(plain["validation"]["spearmanr"], abs=1e-5)
        and plain["components"]["site_effects"]["on"] is False
    )
    for candidate in ("plain", "full"):
        assert sorted(p.name for p in (tmp_path / "candidates" / candidate / "checkpoints").iterdir()) == [
            "epoch_0001",
            "epoch_0002",
        ]
    assert "kept the full one" in (best / "README.md").read_text()


def test_refuses_to_train_over_an_existing_run(tmp_path, capsys):
    assert main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "already holds a run" in error and "--resume-from-checkpoint latest" in error


def test_ssm_parameters_get_their_own_group_also_after_loading(tiny_config, tmp_path):
    """The S4D kernel tags its SSM parameters with their optimizer settings; the tags hold for a freshly built model
    and for one loaded from a checkpoint (loading replaces the parameter tensors)."""
    from lyra_hf import LyraForSequenceRegression

    built = LyraForSequenceRegression(tiny_config(ssm_learning_rate=1e-4))
    built.save_pretrained(tmp_path)
    for model in (built, LyraForSequenceRegression.from_pretrained(tmp_path)):
        groups = parameter_groups(model, learning_rate=1e-3, weight_decay=0.05)
        by_name = {id(p): name for name, p in model.named_parameters()}
        ssm = next(group for group in groups if group["lr"] == 1e-4)
        assert ssm["weight_decay"] == 0.0
        assert sorted(by_name[id(p)].rsplit(".", 1)[-1] for p in ssm["params"]) == sorted(
            ["log_dt", "log_A_real", "A_imag"] * 2
        )
        decayed = next(group for group in groups if group["weight_decay"] == 0.05)
        assert all(p.ndim >= 2 for p in decayed["params"]) and not any(
            "kernel.log" in by_name[id(p)] for p in decayed["params"]
        )
        assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))


def test_two_processes_agree_and_evaluate_every_sample_once(tmp_path):
    """Two real processes (gloo) on this CPU machine. `accelerate launch --cpu --num_processes 2` starts one process
    (accelerate's launcher spawns several CPU processes only through MPI), so this uses `--multi_gpu`, which starts them
    with torchrun; lyra-train then forms the gloo group. 101 evaluation samples do not split evenly, so without
    `gather_for_metrics` a sample would be counted twice."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "tests" / "distributed_train.py"),
        *TINY,
        "--epochs",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_processes"] == 2
    assert results["validation"]["num_samples"] == results["test"]["num_samples"] == 101
    rank_0, rank_1 = (load_file(tmp_path / f"rank_{rank}.safetensors") for rank in (0, 1))
    assert rank_0.keys() == rank_1.keys()
    for name in rank_0:
        assert torch.equal(rank_0[name], rank_1[name]), name
    assert results["test"]["spearmanr"] == pytest.approx(synthetic_test_spearman(tmp_path / "best", 101), abs=1e-5)


def test_resume_after_sigkill_ends_like_an_uninterrupted_run(tmp_path):
    flags = [*TINY, "--max-train-samples", "1500", "--epochs", "4", "--seed", "7"]
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    completed = run_cli(*flags, "--output-dir", str(uninterrupted))
    assert completed.returncode == 0, completed.stderr[-3000:]

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lyra_hf.train", *flags, "--output-dir", str(interrupted)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        cwd=REPO,
    )
    deadline = time.monotonic() + 300
    checkpoint_times = []
    for epoch in (1, 2):
        while not (interrupted / "checkpoints" / f"epoch_{epoch:04d}").exists():
            assert process.poll() is None and time.monotonic() < deadline, f"the run ended before checkpoint {epoch}"
            time.sleep(0.01)
        checkpoint_times.append(time.monotonic())
    # Halfway into the third epoch, timed by the second: a fixed delay outlived the whole run once epochs got fast.
    time.sleep((checkpoint_times[1] - checkpoint_times[0]) / 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "results.json").exists()

    completed = run_cli(*flags, "--output-dir", str(interrupted), "--resume-from-checkpoint", "latest")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "resumed from" in completed.stderr
    expected, actual = (
        what_a_run_computed(json.loads((path / "results.json").read_text())) for path in (uninterrupted, interrupted)
    )
    assert actual == expected
    for name, tensor in load_file(uninterrupted / "best" / "model.safetensors").items():
        assert torch.equal(tensor, load_file(interrupted / "best" / "model.safetensors")[name]), name


def test_weight_average_is_what_is_evaluated_saved_and_resumed(tmp_path):
    flags = [*TINY, "--epochs", "2", "--ema-decay", "0.9"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main([*flags, "--output-dir", str(full)]) == 0
    results = json.loads((full / "results.json").read_text())
    assert results["ema_decay"] == 0.9
    checkpoint = full / "checkpoints" / f"epoch_{results['best_epoch']:04d}"
    average, raw = load_file(checkpoint / "ema.safetensors"), load_file(checkpoint / "model.safetensors")
    best = load_file(full / "best" / "model.safetensors")
    assert all(torch.equal(tensor, average[f"module.{name}"]) for name, tensor in best.items())
    assert not all(torch.equal(tensor, raw[name]) for name, tensor in best.items())
    assert results["test"]["spearmanr"] == pytest.approx(synthetic_test_spearman(full / "best", 101), abs=1e-5)

    # Resuming after epoch 1 (its checkpoint holds the average) ends exactly where the uninterrupted run did.
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "epoch_0001", resumed / "checkpoints" / "epoch_0001")
    shutil.copytree(full / "best", resumed / "best")
    assert main([*flags, "--output-dir", str(resumed), "--resume-from-checkpoint", "latest"]) == 0
    expected, actual = (
        what_a_run_computed(json.loads((path / "results.json").read_text())) for path in (full, resumed)
    )
    assert actual == expected
    assert all(
        torch.equal(tensor, load_file(resumed / "best" / "model.safetensors")[name]) for name, tensor in best.items()
    )


def test_resuming_with_other_settings_is_refused_naming_each_difference(tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(
        "sequence,label\n" + "".join(f"{'ACDEFGHIKL'[i % 10]}KTAYIAK{'QRS'[i % 3]},{i / 10}\n" for i in range(60))
    )
    flags = [*TINY, "--epochs", "1", "--train-file", str(data), "--output-dir", str(tmp_path / "run")]
    assert main(flags) == 0
    before = sorted(path.stat().st_mtime_ns for path in (tmp_path / "run").rglob("*"))
    data.write_text(data.read_text() + "MKTAYIAKQR,9.9\n")
    assert main([*flags, "--ema-decay", "0.9", "--learning-rate", "0.001", "--resume-from-checkpoint", "latest"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    for difference in (
        "--ema-decay 0.9 (checkpoint: None)",
        "--learning-rate 0.001 (checkpoint: 0.003)",
        "--train-file is not the file it was",
    ):
        assert difference in error, error
    assert sorted(path.stat().st_mtime_ns for path in (tmp_path / "run").rglob("*")) == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--train-file", "no/such/file.csv"], "No such data file"),
        (["--train-file", "{csv}", "--sequence-column", "seq"], "no column 'seq'; available columns"),
        (["--train-file", "{csv}", "--label-columns", "fitness"], "no column 'fitness'"),
        (["--train-file", "{bad_csv}"], "character 'Z' at position 2"),
        (["--config", "no/such/config.json"], "no/such/config.json"),
    ],
)
def test_bad_files_and_flags_give_one_error_line(tmp_path, capsys, flags, message):
    (tmp_path / "data.csv").write_text("sequence,label\n" + "".join(f"ACDE{'FGH'[i % 3]},{i}\n" for i in range(30)))
    (tmp_path / "bad.csv").write_text("sequence,label\nACD,1\nAZC,2\n")
    flags = [flag.format(csv=tmp_path / "data.csv", bad_csv=tmp_path / "bad.csv") for flag in flags]
    assert main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path / "out"), *flags]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("lyra-train: error:") and message in error[-1], error
    assert not any("Traceback" in line for line in error)


@pytest.mark.parametrize(
    "flags",
    [
        ["--epochs", "0"],
        ["--learning-rate", "-1"],
        ["--task", "classification"],
        ["--ema-decay", "1"],
        ["--metric-for-best-model", "auroc"],
    ],
)
def test_bad_flag_values_are_usage_errors(capsys, flags):
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    assert "lyra-train: error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--train-file", "t.csv", "--ensemble-validation", "rotate"],
            "--ensemble-validation rotate needs --ensemble N",
        ),
        (
            ["--ensemble", "2", "--ensemble-validation", "rotate"],
            "--ensemble-validation rotate carves validation from --train-file",
        ),
        (
            ["--train-file", "t.csv", "--validation-file", "v.csv", "--validation-part", "1"],
            "--validation-part carves validation from --train-file",
        ),
    ],
)
def test_validation_parts_need_validation_carved_from_the_training_file(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]


def test_ensembles_rotate_validation_by_default_where_it_is_carved_from_the_training_file():
    from lyra_hf.training import TrainOptions

    def default(**flags):
        return TrainOptions(label_columns=["fitness"], **flags).ensemble_validation

    assert default(train_file="t.csv", ensemble=3) == "rotate"
    assert default(train_file="t.csv", validation_file="v.csv", ensemble=3) == "shared"  # the validation split is given
    assert default(ensemble=3) == "shared"  # the synthetic data's own validation split
    assert default(train_file="t.csv") == "shared"  # one run
    assert default(train_file="t.csv", ensemble=3, ensemble_validation="shared") == "shared"


def test_trainer_fine_tuning_with_load_best_model_at_end(tmp_path):
    from transformers import Trainer, TrainingArguments

    from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
    from lyra_hf.data import collator_for, tokenize_dataset
    from lyra_hf.metrics import regression_metrics

    tokenizer = LyraTokenizer()
    dataset = synthetic_fitness_dataset(num_train=600, num_validation=100, num_test=10, seed=3)
    dataset = tokenize_dataset(dataset, tokenizer)
    torch.manual_seed(0)
    model = LyraForSequenceRegression(LyraConfig())
    arguments = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=4,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="spearmanr",
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=collator_for("regression", tokenizer),
        compute_metrics=regression_metrics(["fitness"]),
    )
    untrained_loss = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < 0.9 * untrained_loss
    best = trainer.state.best_model_checkpoint
    scores = [entry["eval_spearmanr"] for entry in trainer.state.log_history if "eval_spearmanr" in entry]
    assert best is not None and trainer.state.best_metric == max(scores)
    reloaded = LyraForSequenceRegression.from_pretrained(best)
    for (name, a), (_, b) in zip(trainer.model.named_parameters(), reloaded.named_parameters()):
        assert torch.equal(a.detach().cpu(), b), name
    assert np.isfinite(trainer.evaluate()["eval_spearmanr"])


def test_time_budget_and_bf16_mixed_precision(tmp_path):
    """`--max-train-minutes` stops inside the first epoch and still finishes the run; bf16 autocast trains on CPU."""
    assert (
        main(
            [
                *TINY,
                "--epochs",
                "3",
                "--max-train-minutes",
                "0.0001",
                "--mixed-precision",
                "bf16",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["stopped_early"] and len(results["history"]) == 1
    assert results["train_seconds"] < 30 and np.isfinite(results["test"]["mse"])


def test_fine_tuning_a_checkpoint_keeps_the_encoder_and_gives_the_new_task_a_new_head(tmp_path, tiny_config):
    from lyra_hf import LyraForSequenceRegression, LyraTokenizer
    from lyra_hf.training import build_model, build_tokenizer

    torch.manual_seed(0)
    pretrained = LyraForSequenceRegression(tiny_config(vocab_size=26))
    pretrained.save_pretrained(tmp_path / "pretrained")
    LyraTokenizer().save_pretrained(tmp_path / "pretrained")
    args = parse_options(
        ["--config", str(tmp_path / "pretrained"), "--task", "classification", "--train-file", "unused.csv"]
    )
    tokenizer = build_tokenizer(args)
    model = build_model(args, tokenizer, ["a", "b", "c"])
    assert type(model).__name__ == "LyraForSequenceClassification" and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert model.score.weight.shape == (3, 16)
    for name, parameter in pretrained.lyra.named_parameters():
        assert torch.equal(parameter, model.lyra.get_parameter(name)), name
    with pytest.raises(ValueError, match="--hidden-size cannot resize the pretrained checkpoint"):
        build_model(
            parse_options(["--config", str(tmp_path / "pretrained"), "--hidden-size", "32"]), tokenizer, ["fitness"]
        )


PROTEINGYM_WILD_TYPE = "MKTAYIAKQRQISFVKSHFSRQ"


def write_proteingym_file(path: Path, rows: int = 240, folds: int = 3) -> Path:
    """A ProteinGym-format DMS file: mutant, mutated_sequence, DMS_score and ProteinGym's three fold columns (random,
    position modulo the folds, contiguous segments of the sequence)."""
    generator = np.random.default_rng(0)
    wild_type = PROTEINGYM_WILD_TYPE
    lines = ["mutant,mutated_sequence,DMS_score,fold_random_5,fold_modulo_5,fold_contiguous_5"]
    for row in range(rows):
        position = int(generator.integers(len(wild_type)))
        letter = "ACDEFGHIKLMNPQRSTVWY"[int(generator.integers(20))]
        mutated = wild_type[:position] + letter + wild_type[position + 1 :]
        score = float(letter in "DEKR") + 0.1 * generator.normal()
        folds_of_row = f"{row % folds},{position % folds},{position * folds // len(wild_type)}"
        lines.append(f"{wild_type[position]}{position + 1}{letter},{mutated},{score:.4f},{folds_of_row}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_prior_file(path: Path) -> Path:
    """A zero-shot prior of every single substitution of `PROTEINGYM_WILD_TYPE`, ProteinGym's layout (mutant,score)."""
    generator = np.random.default_rng(1)
    rows = [
        f"{wild}{position}{letter},{float(letter in 'DEKR') + generator.normal():.4f}"
        for position, wild in enumerate(PROTEINGYM_WILD_TYPE, 1)
        for letter in "ACDEFGHIKLMNPQRSTVWY"
        if letter != wild
    ]
    path.write_text("mutant,score\n" + "\n".join(rows) + "\n")
    return path


def read_csv(path: Path) -> dict[str, list]:
    """A CSV file's columns, numbers as floats."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        name: [float(row[name]) if name.startswith(("prediction", "label", "baseline")) else row[name] for row in rows]
        for name in rows[0]
    }


def test_cross_validation_over_a_fold_column(tmp_path, capsys):
    source = write_proteingym_file(tmp_path / "gym.csv")
    output = tmp_path / "cv"
    flags = [
        *TINY,
        "--train-file",
        str(source),
        "--sequence-column",
        "mutated_sequence",
        "--label-columns",
        "DMS_score",
    ]
    flags += ["--fold-column", "fold_random_5", "--epochs", "2", "--num-processes", "1", "--output-dir", str(output)]
    assert main(flags) == 0
    warned = capsys.readouterr().out
    assert "fold_random_5, 3 folds: pooled test spearmanr" in warned
    results = json.loads((output / "results.json").read_text())
    assert list(results["folds"]) == ["0", "1", "2"]
    # ProteinGym's figure: every fold's test predictions pooled, in oof_predictions.csv, and their Spearman.
    pooled = read_csv(output / "oof_predictions.csv")
    assert len(pooled["variant"]) == 240 and sorted(set(pooled["fold"])) == ["0", "1", "2"]
    assert results["test_pooled"]["spearmanr"] == pytest.approx(
        spearmanr(pooled["prediction_DMS_score"], pooled["label_DMS_score"])[0], abs=1e-9
    )
    assert results["baseline"]["test_pooled"]["spearmanr"] == pytest.approx(
        spearmanr(pooled["baseline_DMS_score"], pooled["label_DMS_score"])[0], abs=1e-9
    )
    for fold in "012":
        fold_results = json.loads((output / f"fold_{fold}" / "results.json").read_text())
        assert fold_results["test"]["num_samples"] == 80  # exactly that fold's rows
        assert results["folds"][fold]["test"] == fold_results["test"]
        assert (output / f"fold_{fold}" / "best" / "model.safetensors").is_file()
        # Each fold is a run of its own: its options.json names its test fold, and reruns it alone.
        assert json.loads((output / f"fold_{fold}" / "options.json").read_text())["test_fold"] == fold
    assert json.loads((output / "options.json").read_text())["fold_column"] == "fold_random_5"
    spearmans = [results["folds"][fold]["test"]["spearmanr"] for fold in "012"]
    assert results["test_mean"]["spearmanr"] == pytest.approx(np.mean(spearmans), abs=1e-12)
    assert results["test_std"]["spearmanr"] == pytest.approx(np.std(spearmans), abs=1e-12)
    # The one-hot baseline of each fold, and its mean over folds beside the model's.
    baseline = [results["folds"][fold]["baseline"]["test"]["spearmanr"] for fold in "012"]
    assert results["baseline"]["test_mean"]["spearmanr"] == pytest.approx(np.mean(baseline), abs=1e-12)

    # A fold column that puts one sequence in two folds gets a one-line warning (this file's random single mutants
    # repeat some variants), counting the sequences.
    with open(source) as handle:
        folds_of = {}
        for row in csv.DictReader(handle):
            folds_of.setdefault(row["mutated_sequence"], set()).add(row["fold_random_5"])
    straddling = sum(len(folds) > 1 for folds in folds_of.values())
    assert straddling > 0 and f"--fold-column fold_random_5 puts {straddling} sequences in more than one fold" in warned

    # An interrupted cross-validation: fold 2 had finished its epochs but not its results; folds 0 and 1 are kept.
    (output / "fold_2" / "results.json").unlink()
    (output / "results.json").unlink()
    kept = (output / "fold_0" / "results.json").stat().st_mtime_ns
    assert main([*flags, "--resume-from-checkpoint", "latest"]) == 0
    assert (output / "fold_0" / "results.json").stat().st_mtime_ns == kept
    assert "resumed from" in capsys.readouterr().err
    resumed = json.loads((output / "results.json").read_text())
    assert resumed["folds"]["2"]["test"]["spearmanr"] == pytest.approx(
        results["folds"]["2"]["test"]["spearmanr"], abs=1e-6
    )

    # A subset of folds, into a new folder.
    assert main([*flags[:-1], str(tmp_path / "subset"), "--folds", "0,2"]) == 0
    assert list(json.loads((tmp_path / "subset" / "results.json").read_text())["folds"]) == ["0", "2"]
    assert main([*flags[:-1], str(tmp_path / "bad"), "--folds", "0,9"]) == 1
    assert "--folds 9: not in column 'fold_random_5', whose folds are ['0', '1', '2']" in capsys.readouterr().err
    wrong_column = [*flags[:-1], str(tmp_path / "bad")]
    wrong_column[wrong_column.index("fold_random_5")] = "fold_random_10"
    assert main(wrong_column) == 1
    assert "no column 'fold_random_10'; available columns:" in capsys.readouterr().err


def test_unknown_residues_stop_a_run_unless_mapped_to_unk(tmp_path, capsys):
    source = tmp_path / "u.csv"
    source.write_text(
        "sequence,label\n"
        + "".join(f"{'ACDEFGHIK'[i % 9]}{'UO'[i % 2] if i % 5 == 0 else 'M'}KL,{i % 7}\n" for i in range(200))
    )
    flags = [*TINY, "--train-file", str(source), "--epochs", "1", "--num-processes", "1"]
    assert main([*flags, "--output-dir", str(tmp_path / "strict")]) == 1
    assert "pass --unknown unk" in capsys.readouterr().err
    assert main([*flags, "--output-dir", str(tmp_path / "unk"), "--unknown", "unk"]) == 0


def test_per_residue_runs_score_only_labelled_residues(tmp_path):
    generator = np.random.default_rng(1)
    rows = []
    for _ in range(120):
        sequence = "".join(generator.choice(list("ACDEFGHIKLMNPQRSTVWY"), 20))
        labels = "".join("H" if residue in "AELMQK" else "E" if residue in "VIYFWT" else "C" for residue in sequence)
        unresolved = generator.integers(0, 20, 3)
        rows.append((sequence, "".join("X" if i in unresolved else c for i, c in enumerate(labels))))
    source = tmp_path / "ss.csv"
    source.write_text("sequence,ss\n" + "".join(f"{s},{y}\n" for s, y in rows))
    flags = [
        *TINY,
        "--train-file",
        str(source),
        "--validation-file",
        str(source),
        "--task",
        "token-classification",
        "--label-columns",
        "ss",
    ]
    assert (
        main(
            [
                *flags,
                "--ignore-label-characters",
                "X",
                "--epochs",
                "1",
                "--num-processes",
                "1",
                "--output-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metric_for_best_model"] == "accuracy"  # Q3: the headline of per-residue tasks
    assert results["validation"]["num_residues"] == sum(len(y) - y.count("X") for _, y in rows[:101])
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["C", "E", "H"]  # X is no class


def test_learning_rate_schedule_warms_up_and_ends_at_zero_whatever_its_length():
    from lyra_hf.training import LearningRateSchedule

    schedule = LearningRateSchedule("cosine", 0.1, steps=100, processes=2)
    factors = [schedule(2 * step) for step in range(101)]
    assert factors[0] == 0 and factors[5] == pytest.approx(0.5) and factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[100] == pytest.approx(0.0, abs=1e-12)
    schedule.steps = 40  # resized by a time budget: warm-up and decay follow
    assert schedule(2 * 4) == pytest.approx(1.0) and schedule(2 * 40) == pytest.approx(0.0, abs=1e-12)
    assert (
        LearningRateSchedule("linear", 0.0, 10)(5) == pytest.approx(0.5)
        and LearningRateSchedule("constant", 0.1, 10)(0) == 1.0
    )


def test_a_time_budget_sizes_the_schedule_and_a_resume_keeps_it(tmp_path):
    """The budget (3 s, about 2 of them for training here) is turned into a number of steps after the first 10; the
    run ends at the schedule's last step, learning rate 0, and a run resumed from an earlier checkpoint keeps that
    number."""
    flags = [
        *TINY,
        "--epochs",
        "200",
        "--max-train-minutes",
        "0.05",
        "--num-processes",
        "1",
        "--threads",
        "1",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(flags) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    steps_per_epoch = 17  # 540 training sequences (600 less the carved validation) in batches of 32
    assert results["stopped_early"] and results["steps"] == results["schedule_steps"] < 200 * steps_per_epoch
    assert results["schedule_steps"] > steps_per_epoch, (
        "the machine was too slow for this test's budget to span two epochs"
    )
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    scheduler = torch.load(checkpoints[-1] / "scheduler.bin", weights_only=True)
    assert scheduler["_last_lr"] == pytest.approx([0.0] * len(scheduler["_last_lr"]), abs=1e-12)

    shutil.rmtree(checkpoints[-1])
    (tmp_path / "results.json").unlink()
    assert main([*flags, "--resume-from-checkpoint", "latest"]) == 0
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert (resumed["steps"], resumed["schedule_steps"]) == (results["steps"], results["schedule_steps"])
    assert resumed["validation"]["spearmanr"] == pytest.approx(results["validation"]["spearmanr"], abs=1e-6)


def test_readme_benchmark_file_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """The training guide's ProteinGym, FLIP, per-residue and ensemble commands (docs/training.md), run as written on
    small files of those formats."""
    from test_try_it import REPO as ROOT
    from test_try_it import bash_blocks

    guide = (ROOT / "docs" / "training.md").read_text()
    (block,) = [
        block
        for block in bash_blocks(guide, "Benchmark files as they ship")
        if any("--fold-column" in line for line in block)
    ]
    commands = " ".join(block).replace("\\ ", "").split("lyra-train ")[1:]
    generator = np.random.default_rng(2)
    letters = list("ACDEFGHIKLMNPQRSTVWY")
    write_proteingym_file(tmp_path / "DMS.csv", rows=150, folds=5)
    write_prior_file(tmp_path / "DMS_prior.csv")
    flip = ["sequence,target,set,validation"]
    for row in range(120):
        sequence = "".join(generator.choice(letters + ["U"] * (row % 10 == 0), 12))
        split = "test" if row % 4 == 0 else "train"
        flip.append(
            f"{sequence},{sequence.count('K') + generator.normal():.3f},{split},{split == 'train' and row % 4 == 1}"
        )
    (tmp_path / "flip.csv").write_text("\n".join(flip) + "\n")
    ss = ["sequence,ss"]
    for _ in range(120):
        sequence = "".join(generator.choice(letters, 15))
        ss.append(
            sequence
            + ","
            + "".join("X" if generator.random() < 0.1 else "H" if c in "AELMQK" else "C" for c in sequence)
        )
    (tmp_path / "ss.csv").write_text("\n".join(ss) + "\n")
    monkeypatch.chdir(tmp_path)
    # The commands as written, on files of a few dozen rows: without the small-data floor of optimizer steps, which
    # would make each of these runs hundreds of tiny epochs (the floor has its own test).
    monkeypatch.setattr("lyra_hf.training.schedule.DEFAULT_MIN_STEPS", 0)
    assert len(commands) == 4
    for command in commands:
        assert main(command.split()) == 0, command
    out = capsys.readouterr().out
    assert "ensemble of 5: test spearmanr" in out
    for scheme in ("fold_random_5", "fold_modulo_5", "fold_contiguous_5"):
        assert f"{scheme}, 5 folds: pooled test spearmanr" in out
        scheme_results = json.loads((tmp_path / "runs" / "dms_cv" / "results.json").read_text())["schemes"][scheme]
        assert (
            sorted(scheme_results["folds"]) == ["0", "1", "2", "3", "4"]
            and scheme_results["test_pooled"]["num_samples"] == 150
        )
        assert {"with_prior", "prior_alone"} <= set(scheme_results["baseline"])
    assert json.loads((tmp_path / "runs" / "ss" / "results.json").read_text())["metric_for_best_model"] == "accuracy"
    # The ensemble section's lyra-predict command, on the ensemble the fourth command trained.
    (predict_block,) = [
        block
        for block in bash_blocks(guide, "Seed ensembles: predictions with an uncertainty")
        if any("lyra-predict" in line for line in block)
    ]
    assert predict_main(" ".join(predict_block).split()[1:]) == 0
    with open(tmp_path / "flip_predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    # The members' spread: 0 where every member kept its start (the linear fit, the same for all seeds), which this
    # file's additive target (a count of K) allows.
    assert len(rows) == 120 and all(float(row["predicted_target_std"]) >= 0 for row in rows)


def test_a_seed_ensemble_trains_its_members_and_scores_their_mean(tmp_path, capsys):
    output = tmp_path / "ensemble"
    flags = [*TINY, "--epochs", "2", "--ensemble", "2", "--output-dir", str(output)]
    assert main(flags) == 0
    assert "ensemble of 2: test spearmanr" in capsys.readouterr().out
    results = json.loads((output / "results.json").read_text())
    assert results["ensemble_size"] == 2 and results["seeds"] == [42, 43]
    members = [json.loads((output / f"member_{index}" / "results.json").read_text()) for index in range(2)]
    for index, member in enumerate(members):
        assert results["members"][f"member_{index}"]["test"] == member["test"]
    assert results["members_mean"]["test"]["spearmanr"] == pytest.approx(
        np.mean([member["test"]["spearmanr"] for member in members]), abs=1e-12
    )
    assert results["members_std"]["test"]["spearmanr"] == pytest.approx(
        np.std([member["test"]["spearmanr"] for member in members]), abs=1e-12
    )
    # Every member used the one data split: the same validation rows, so the validation metrics are comparable.
    assert (
        members[0]["validation"]["num_samples"]
        == members[1]["validation"]["num_samples"]
        == results["validation"]["num_samples"]
        == 101
    )

    # The ensemble folder: each member a save_pretrained folder that loads alone, and the manifest.
    best = output / "best"
    assert json.loads((best / "ensemble.json").read_text())["members"] == ["member_0", "member_1"]
    loaded = [
        AutoModelForSequenceClassification.from_pretrained(best, subfolder=f"member_{index}").eval()
        for index in range(2)
    ]
    weights = [load_file(output / f"member_{index}" / "best" / "model.safetensors") for index in range(2)]
    for model, saved in zip(loaded, weights):
        assert all(torch.equal(model.state_dict()[key], value) for key, value in saved.items())
    assert not torch.equal(weights[0]["score.weight"], weights[1]["score.weight"])  # different seeds
    member_options = [json.loads((output / f"member_{index}" / "options.json").read_text()) for index in range(2)]
    assert [(entry["seed"], entry["data_seed"], entry["ensemble"]) for entry in member_options] == [
        (42, 42, None),
        (43, 42, None),
    ]
    assert json.loads((output / "options.json").read_text())["ensemble"] == 2
    assert "subfolder=member" in (best / "README.md").read_text()

    # The ensemble's test metric is that of the members' mean prediction, one sequence at a time.
    test = synthetic_fitness_dataset(seed=42)["test"].select(range(101))
    tokenizer = AutoTokenizer.from_pretrained(best, subfolder="member_0")
    with torch.no_grad():
        mean = [
            np.mean([model(**tokenizer(sequence, return_tensors="pt")).logits.item() for model in loaded])
            for sequence in test["sequence"]
        ]
    assert results["test"]["spearmanr"] == pytest.approx(
        spearmanr(mean, [labels[0] for labels in test["labels"]])[0], abs=1e-4
    )

    # Interrupted after member_0 finished: it is kept, member_1 continues from its checkpoint.
    (output / "member_1" / "results.json").unlink()
    (output / "results.json").unlink()
    kept = (output / "member_0" / "results.json").stat().st_mtime_ns
    assert main([*flags, "--resume-from-checkpoint", "latest"]) == 0
    assert (output / "member_0" / "results.json").stat().st_mtime_ns == kept
    resumed = json.loads((output / "results.json").read_text())
    assert resumed["test"]["spearmanr"] == pytest.approx(results["test"]["spearmanr"], abs=1e-6)
    assert main(flags) == 1
    assert "already holds a run" in capsys.readouterr().err


def test_a_rotating_ensemble_validates_each_member_on_its_own_tenth_and_pools_them(tmp_path, capsys):
    """`--ensemble-validation rotate`, the default with a training file: member i validates on the i-th tenth of one
    seeded shuffle of the training rows, so that together the members learned from every row; the ensemble's
    validation metric is that of each member's predictions on its own tenth, pooled (recomputed here model by model,
    sequence by sequence)."""
    data = synthetic_fitness_dataset(num_train=200, num_validation=1, num_test=40, seed=5)
    for split, name in (("train", "train.csv"), ("test", "test.csv")):
        rows = data[split]
        (tmp_path / name).write_text(
            "sequence,fitness\n"
            + "".join(f"{sequence},{labels[0]}\n" for sequence, labels in zip(rows["sequence"], rows["labels"]))
        )
    output = tmp_path / "ensemble"
    flags = [
        *TINY[:4],
        "--train-file",
        str(tmp_path / "train.csv"),
        "--test-file",
        str(tmp_path / "test.csv"),
        "--label-columns",
        "fitness",
    ]
    flags += ["--epochs", "2", "--ensemble", "3", "--seed", "7", "--output-dir", str(output)]
    assert main(flags) == 0
    assert "ensemble of 3: test spearmanr" in capsys.readouterr().out
    results = json.loads((output / "results.json").read_text())
    parts = [
        json.loads((output / f"member_{index}" / "options.json").read_text())["validation_part"] for index in range(3)
    ]
    assert parts == [0, 1, 2] and results["ensemble_validation"] == "rotate"

    shuffled = np.random.default_rng(7).permutation(
        200
    )  # the data seed's shuffle; member i's tenth: rows 20i to 20i+19
    pooled_predictions, pooled_labels = [], []
    for index in range(3):
        member = output / "best" / f"member_{index}"
        tokenizer, model = (
            AutoTokenizer.from_pretrained(member),
            AutoModelForSequenceClassification.from_pretrained(member).eval(),
        )
        rows = data["train"].select(shuffled[20 * index : 20 * index + 20])
        with torch.no_grad():
            pooled_predictions += [
                model(**tokenizer(sequence, return_tensors="pt")).logits.item() for sequence in rows["sequence"]
            ]
        pooled_labels += [labels[0] for labels in rows["labels"]]
        member_results = json.loads((output / f"member_{index}" / "results.json").read_text())
        assert member_results["validation"]["num_samples"] == 20
    assert results["validation"]["num_samples"] == 60
    assert results["validation"]["spearmanr"] == pytest.approx(
        spearmanr(pooled_predictions, pooled_labels)[0], abs=1e-4
    )
    assert "member i on the i-th tenth of the training rows" in (output / "best" / "README.md").read_text()


def test_a_run_records_how_it_was_made_and_its_command_makes_it_again(tmp_path, capsys):
    """results.json holds the command line, every setting, the inputs' digests, the versions and the training loss
    per epoch, as strict JSON; the recorded command, run again elsewhere, gives the same metrics. Along the way:
    `--alphabet DNA` is the DNA alphabet, `--report-to tensorboard` logs the losses, and a test split of constant labels
    gives null correlations with a note instead of NaN."""
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACGT"), 12)) for _ in range(140)]
    rows = [f"{sequence},{sequence.count('G') + 0.5 * sequence.count('CA')}\n" for sequence in sequences]
    (tmp_path / "train.csv").write_text("sequence,label\n" + "".join(rows[:120]))
    (tmp_path / "test.csv").write_text(
        "sequence,label\n" + "".join(f"{sequence},1.5\n" for sequence in sequences[120:])
    )
    flags = [
        "--hidden-size",
        "16",
        "--state-size",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--alphabet",
        "DNA",
        "--quiet",
    ]
    flags += [
        "--train-file",
        str(tmp_path / "train.csv"),
        "--test-file",
        str(tmp_path / "test.csv"),
        "--report-to",
        "tensorboard",
        "--site-effects",
        "on",
    ]
    assert main([*flags, "--output-dir", str(tmp_path / "run")]) == 0
    assert "spearmanr undefined" in capsys.readouterr().out
    text = (tmp_path / "run" / "results.json").read_text()
    results = json.loads(text, parse_constant=lambda constant: pytest.fail(f"{constant} in results.json"))
    assert results["test"]["spearmanr"] is None and "constant" in results["test"]["note"] and results["test"]["mse"] > 0
    assert results["command"] == ["lyra-train", *flags, "--output-dir", str(tmp_path / "run")]
    assert results["settings"]["learning_rate"] == 3e-3 and results["settings"]["alphabet"] == "DNA"
    assert results["input_sha256"]["train_file"] == hashlib.sha256((tmp_path / "train.csv").read_bytes()).hexdigest()
    assert results["versions"]["torch"] == torch.__version__
    # Sequences of one length: the run starts from the one-hot fit, scored as epoch 0 before any training loss.
    assert [entry["epoch"] for entry in results["history"]] == [0, 1, 2] and all(
        entry["train_loss"] > 0 for entry in results["history"][1:]
    )
    assert AutoTokenizer.from_pretrained(tmp_path / "run" / "best").letters == "ACGTN"
    events = b"".join(path.read_bytes() for path in (tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert b"train/loss" in events and b"validation/spearmanr" in events

    again = results["command"][1:] + ["--output-dir", str(tmp_path / "again")]  # the last --output-dir counts
    assert main(again) == 0
    rerun = json.loads((tmp_path / "again" / "results.json").read_text())
    assert (rerun["validation"], rerun["test"], rerun["history"]) == (
        results["validation"],
        results["test"],
        results["history"],
    )

    options = json.loads((tmp_path / "run" / "options.json").read_text())
    assert (
        options["alphabet"] == "DNA" and options["epochs"] == 2 and options["test_file"] == str(tmp_path / "test.csv")
    )
    assert not {"command", "resume_from_checkpoint", "overwrite_output_dir"} & set(options)
    assert main([str(tmp_path / "run" / "options.json"), "--output-dir", str(tmp_path / "from-options")]) == 0
    from_options = json.loads((tmp_path / "from-options" / "results.json").read_text())
    assert (from_options["validation"], from_options["test"], from_options["history"]) == (
        results["validation"],
        results["test"],
        results["history"],
    )
    assert what_a_run_computed(from_options)["settings"] == what_a_run_computed(results)["settings"]


def test_the_default_schedule_gives_small_data_a_floor_of_optimizer_steps():
    from lyra_hf.training.schedule import DEFAULT_EPOCHS, DEFAULT_MIN_STEPS, planned_steps

    assert planned_steps(3, 6) == 18  # --epochs is taken as given
    assert planned_steps(None, 6) == DEFAULT_MIN_STEPS  # 384 variants in batches of 64: 6 steps an epoch
    assert planned_steps(None, 10_000) == DEFAULT_EPOCHS * 10_000


def test_early_stopping_ends_the_run_once_validation_stops_improving(tmp_path):
    """A learning rate too small to change the model: no epoch beats the first, so the run stops after `patience`
    more, and says so."""
    flags = [
        *TINY,
        "--epochs",
        "20",
        "--learning-rate",
        "1e-12",
        "--metric-for-best-model",
        "mse",
        "--early-stopping-patience",
        "2",
    ]
    assert main([*flags, "--num-processes", "1", "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["best_epoch"] == 1 and len(results["history"]) == 3 and results["stopped_early"]


def test_a_budget_without_epochs_fills_the_budget(tmp_path):
    """Without --epochs the schedule is sized to the budget alone (not capped by 25 epochs); the whole command (the
    data, the baseline and start fits, training, validation, checkpoints and the test split's scoring) ends within
    the budget, and the training loop takes more than 75% of it."""
    budget_minutes = 0.4
    flags = [*TINY, "--max-train-minutes", str(budget_minutes), "--num-processes", "1", "--threads", "1", "--quiet"]
    started = time.monotonic()
    assert main([*flags, "--output-dir", str(tmp_path)]) == 0
    wall_seconds = time.monotonic() - started
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == results["schedule_steps"] > 25 * 17  # more than the 25 epochs a budget used to cap
    assert results["baseline"] and results["test"]
    assert (
        0.75 * 60 * budget_minutes
        <= results["fit_seconds"]
        < results["run_seconds"]
        <= wall_seconds
        <= 60 * budget_minutes
    )


def test_steps_that_slow_down_after_the_last_resize_end_the_schedule_within_the_budget(tmp_path, monkeypatch, capsys):
    """A machine that gets busier after the schedule's last resize (at half the budget): from 70% of it on, each
    training step takes 50 ms more. The run ends its schedule early, inside the budget, and says so."""
    from lyra_hf import LyraForSequenceRegression

    budget_minutes, first_step = 0.25, []
    forward = LyraForSequenceRegression.forward

    def slowing_forward(self, *args, **kwargs):
        if self.training:
            first_step.append(first_step[0] if first_step else time.monotonic())
            if time.monotonic() - first_step[0] > 0.7 * 60 * budget_minutes:
                time.sleep(0.05)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LyraForSequenceRegression, "forward", slowing_forward)
    flags = [
        *TINY,
        "--max-train-minutes",
        str(budget_minutes),
        "--num-processes",
        "1",
        "--threads",
        "1",
        "--no-baseline",
        "--quiet",
    ]
    assert main([*flags, "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["fit_seconds"] <= 60 * budget_minutes
    assert (
        results["steps"] == results["schedule_steps"] < results["deadline_cut_schedule_steps"]
        and results["stopped_early"]
    )
    assert f"ran out before the {results['deadline_cut_schedule_steps']:,} steps" in capsys.readouterr().err


def test_per_residue_models_are_bidirectional_by_default_unless_flags_or_a_config_say_otherwise(tmp_path):
    from lyra_hf.training import TrainOptions, build_tokenizer
    from lyra_hf.training.setup import build_config

    csv_file = tmp_path / "ss.csv"
    csv_file.write_text("sequence,ss\nACDE,HHEC\n")

    def config(**flags):
        options = TrainOptions(train_file=str(csv_file), label_columns=["ss"], task="token-classification", **flags)
        return build_config(options, build_tokenizer(options))

    assert config().bidirectional is True
    assert config(bidirectional=False).bidirectional is False
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 16, "state_size": 8}))
    assert config(config=str(tmp_path / "config.json")).bidirectional is False  # the JSON's (LyraConfig's) value
    regression = TrainOptions(train_file=str(csv_file), label_columns=["ss"], task="regression")
    assert build_config(regression, build_tokenizer(regression)).bidirectional is False


def test_an_options_file_reruns_its_run_from_any_folder_or_refuses_other_inputs(tmp_path, monkeypatch, capsys):
    """options.json names its inputs by absolute path: run from another folder that holds another train.csv, it reads
    the run's own file and reproduces its metrics exactly. Once that file changes, the rerun is refused in one line
    naming the input and both digests, writing nothing, unless --allow-changed-inputs, which results.json records."""
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    rows = [f"{'ACDEFGHIKL'[i % 10]}KTAYIAK{'QRS'[i % 3]},{(i % 7) / 3}\n" for i in range(120)]
    for folder in (first, elsewhere):
        folder.mkdir()
    (first / "train.csv").write_text("sequence,label\n" + "".join(rows))
    (elsewhere / "train.csv").write_text("sequence,label\n" + "".join(reversed(rows)))
    monkeypatch.chdir(first)
    assert (
        main(
            [
                *TINY,
                "--train-file",
                "train.csv",
                "--epochs",
                "1",
                "--num-processes",
                "1",
                "--quiet",
                "--output-dir",
                "run",
            ]
        )
        == 0
    )
    results = json.loads((first / "run" / "results.json").read_text())
    assert json.loads((first / "run" / "options.json").read_text())["train_file"] == str(first / "train.csv")

    monkeypatch.chdir(elsewhere)
    options_file = str(first / "run" / "options.json")
    assert main([options_file, "--output-dir", "again"]) == 0
    again = json.loads((elsewhere / "again" / "results.json").read_text())
    assert (again["validation"], again["test"], again["history"]) == (
        results["validation"],
        results["test"],
        results["history"],
    )
    assert "changed_inputs" not in again

    (first / "train.csv").write_text("sequence,label\n" + "".join(rows[:-1]) + "ACDEFGHIK,9\n")
    capsys.readouterr()
    assert main([options_file, "--output-dir", "changed"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    recorded = results["input_sha256"]["train_file"]
    assert (
        f"--train-file had SHA-256 {recorded[:16]}" in line
        and str(first / "train.csv") in line
        and "--allow-changed-inputs" in line
    )
    assert not (elsewhere / "changed").exists()
    assert main([options_file, "--output-dir", "changed", "--allow-changed-inputs"]) == 0
    changed = json.loads((elsewhere / "changed" / "results.json").read_text())["changed_inputs"]["train_file"]
    assert changed["recorded_sha256"] == recorded and changed["sha256"] != recorded


def test_a_run_says_how_many_sequences_repeat_and_keeps_them_out_of_validation(tmp_path, capsys):
    rows = [f"{'ACDEFGHIKL'[i % 10]}KTAYIAK{'QRS'[i % 3]}{'MN'[i % 2]},{i / 10}\n" for i in range(60)]
    (tmp_path / "train.csv").write_text("sequence,label\n" + "".join(rows))
    assert (
        main(
            [
                *TINY,
                "--train-file",
                str(tmp_path / "train.csv"),
                "--epochs",
                "1",
                "--num-processes",
                "1",
                "--output-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    assert (
        "30 sequences occur more than once (60 rows); a carved validation split keeps each one's rows on one side"
        in capsys.readouterr().err
    )


def test_nucleotides_under_the_protein_alphabet_get_a_hint(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "dna.csv").write_text(
        "sequence,label\n" + "".join(f"{''.join(rng.choice(list('ACGT'), 12))},{row / 10}\n" for row in range(60))
    )
    assert (
        main(
            [
                *TINY,
                "--train-file",
                str(tmp_path / "dna.csv"),
                "--epochs",
                "1",
                "--num-processes",
                "1",
                "--output-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    assert (
        "every training sequence is made of A, C, G, T alone: if these are nucleotides, pass --alphabet dna"
        in capsys.readouterr().err
    )
