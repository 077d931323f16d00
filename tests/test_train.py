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
from lyra_hf.train import main, parameter_groups


REPO = Path(__file__).resolve().parents[1]
# A small model and data so that every run takes seconds.
TINY = ["--hidden-size", "16", "--state-size", "8", "--max-train-samples", "600", "--max-eval-samples", "101", "--batch-size", "32"]
TIMING_KEYS = ("train_seconds", "samples_per_second")


def run_cli(*flags, timeout=300, **popen):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lyra_hf.train", *flags], capture_output=True, text=True, timeout=timeout, env=environment, cwd=REPO
    )


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; accelerate keeps its state in a process-wide singleton."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def synthetic_test_spearman(checkpoint: Path, num_test: int) -> float:
    """Score a saved model on the synthetic test split in one process, sequence by sequence (no batching, no
    gathering), as the reference for what lyra-train reports."""
    test = synthetic_fitness_dataset(seed=42)["test"].select(range(num_test))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        predictions = [model(**tokenizer(sequence, return_tensors="pt")).logits.item() for sequence in test["sequence"]]
    return spearmanr(predictions, [labels[0] for labels in test["labels"]])[0]


def test_end_to_end_on_the_embedded_default(tmp_path):
    assert main([*TINY, "--epochs", "2", "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"validation", "test", "best_epoch", "num_parameters", "train_seconds", "samples_per_second"} <= set(results)
    assert results["best_epoch"] in (1, 2) and len(results["history"]) == 2
    assert results["validation"]["num_samples"] == results["test"]["num_samples"] == 101
    assert results["samples_per_second"] > 0
    # The synthetic landscape's steps (30 residues a sequence) are too small to share out over processes.
    assert results["num_processes"] == 1
    best = tmp_path / "best"
    model = AutoModelForSequenceClassification.from_pretrained(best)
    assert results["num_parameters"] == model.num_parameters()
    assert model.config.id2label == {0: "fitness"} and model.config.problem_type == "regression"
    assert results["test"]["spearmanr"] == pytest.approx(synthetic_test_spearman(best, 101), abs=1e-6)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0001", "epoch_0002"]


def test_refuses_to_train_over_an_existing_run(tmp_path, capsys):
    assert main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "already holds a run" in error and "--resume-from-checkpoint latest" in error


def test_ssm_parameters_get_their_own_group(tiny_config):
    from lyra_hf import LyraForSequenceRegression

    model = LyraForSequenceRegression(tiny_config(ssm_learning_rate=1e-4))
    groups = parameter_groups(model, learning_rate=1e-3, weight_decay=0.05)
    by_name = {id(p): name for name, p in model.named_parameters()}
    ssm = next(group for group in groups if group["lr"] == 1e-4)
    assert ssm["weight_decay"] == 0.0
    assert {by_name[id(p)].rsplit(".", 1)[-1] for p in ssm["params"]} == {"log_dt", "log_A_real", "A_imag"}
    decayed = next(group for group in groups if group["weight_decay"] == 0.05)
    assert all(p.ndim >= 2 for p in decayed["params"])
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))


def test_two_processes_agree_and_evaluate_every_sample_once(tmp_path):
    """Two real processes (gloo) on this CPU machine. `accelerate launch --cpu --num_processes 2` starts one process
    (accelerate's launcher spawns several CPU processes only through MPI), so this uses `--multi_gpu`, which starts them
    with torchrun; lyra-train then forms the gloo group. 101 evaluation samples do not split evenly, so without
    `gather_for_metrics` a sample would be counted twice."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "tests" / "distributed_train.py"),
        *TINY, "--epochs", "2", "--output-dir", str(tmp_path),
    ]  # fmt: skip
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
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment, cwd=REPO,
    )  # fmt: skip
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
    expected, actual = (json.loads((path / "results.json").read_text()) for path in (uninterrupted, interrupted))
    for key in TIMING_KEYS:
        expected.pop(key), actual.pop(key)
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
    expected, actual = (json.loads((path / "results.json").read_text()) for path in (full, resumed))
    for key in TIMING_KEYS:
        expected.pop(key), actual.pop(key)
    assert actual == expected
    assert all(torch.equal(tensor, load_file(resumed / "best" / "model.safetensors")[name]) for name, tensor in best.items())


def test_resuming_without_the_weight_average_fails_clearly(tmp_path, capsys):
    assert main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path)]) == 0
    flags = [*TINY, "--epochs", "2", "--ema-decay", "0.9", "--output-dir", str(tmp_path), "--resume-from-checkpoint", "latest"]
    assert main(flags) == 1
    assert "written without it (no ema.safetensors)" in capsys.readouterr().err


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
    [["--epochs", "0"], ["--learning-rate", "-1"], ["--task", "classification"], ["--ema-decay", "1"], ["--metric-for-best-model", "auroc"]],
)
def test_bad_flag_values_are_usage_errors(capsys, flags):
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    assert "lyra-train: error:" in capsys.readouterr().err


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
    assert main([*TINY, "--epochs", "3", "--max-train-minutes", "0.0001", "--mixed-precision", "bf16", "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["stopped_early"] and len(results["history"]) == 1
    assert results["train_seconds"] < 30 and np.isfinite(results["test"]["mse"])


def test_fine_tuning_a_checkpoint_keeps_the_encoder_and_gives_the_new_task_a_new_head(tmp_path, tiny_config):
    from lyra_hf import LyraForSequenceRegression, LyraTokenizer
    from lyra_hf.train import build_model, build_tokenizer, parse_args

    torch.manual_seed(0)
    pretrained = LyraForSequenceRegression(tiny_config(vocab_size=26))
    pretrained.save_pretrained(tmp_path / "pretrained")
    LyraTokenizer().save_pretrained(tmp_path / "pretrained")
    args = parse_args(["--config", str(tmp_path / "pretrained"), "--task", "classification", "--train-file", "unused.csv"])
    tokenizer = build_tokenizer(args)
    model = build_model(args, tokenizer, ["a", "b", "c"])
    assert type(model).__name__ == "LyraForSequenceClassification" and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert model.score.weight.shape == (3, 16)
    for name, parameter in pretrained.lyra.named_parameters():
        assert torch.equal(parameter, model.lyra.get_parameter(name)), name
    with pytest.raises(ValueError, match="--hidden-size cannot resize the pretrained checkpoint"):
        build_model(parse_args(["--config", str(tmp_path / "pretrained"), "--hidden-size", "32"]), tokenizer, ["fitness"])
