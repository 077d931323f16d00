"""CPU use: which CPUs a process may use, threads and processes, exact multi-process prediction and scanning,
multi-process training equal to one process, streaming prediction, and interrupted prediction."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraForTokenClassification, LyraTokenizer
from lyra_hf import predict as predict_command
from lyra_hf import scan as scan_command
from lyra_hf.cpu import cgroup_cpu_quota, configure_threads, plan_processes, usable_cpus


REPO = Path(__file__).resolve().parents[1]
LETTERS = "ACDEFGHIKLMNPQRSTVWY"


def two_cpus():
    if usable_cpus() < 2:
        pytest.skip("needs two usable CPUs")


def write_cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    "files, quota",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "250000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.5),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "20000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 0.2),
        ({}, None),
    ],
)
def test_cgroup_quota_parsing(tmp_path, files, quota):
    assert cgroup_cpu_quota(write_cgroup(tmp_path, files)) == quota


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(write_cgroup(tmp_path / "none", {"cpu.max": "max 100000"})) == affinity
    assert usable_cpus(write_cgroup(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert usable_cpus(write_cgroup(tmp_path / "big", {"cpu.max": f"{100000 * (affinity + 8)} 100000"})) == affinity
    if affinity >= 2:
        assert usable_cpus(write_cgroup(tmp_path / "1.5", {"cpu.max": "150000 100000"})) == 2


def test_one_cpu_under_taskset_gives_one_single_threaded_process():
    probe = "from lyra_hf.cpu import usable_cpus, plan_processes; print(usable_cpus(), *plan_processes(None, None))"
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    completed = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", probe], capture_output=True, text=True, env=environment, cwd=REPO
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["1", "1", "1"]


def test_the_users_threads_win(monkeypatch):
    cpus = usable_cpus()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert plan_processes(None, None) == (cpus, 1)
    assert plan_processes(1, None) == (1, cpus)
    assert plan_processes(None, 3) == (max(1, cpus // 3), 3)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert plan_processes(None, None) == (max(1, cpus // 2), 2)
    assert plan_processes(None, 1) == (cpus, 1)  # --threads over OMP_NUM_THREADS
    before = torch.get_num_threads()
    try:
        assert configure_threads() == 2 and torch.get_num_threads() == 2
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def save_checkpoint(path: Path, model_class=LyraForSequenceRegression, **config) -> Path:
    torch.manual_seed(0)
    tokenizer = LyraTokenizer()
    model_class(LyraConfig(hidden_size=16, state_size=8, vocab_size=len(tokenizer), **config)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_sequences(path: Path, count: int, seed: int = 0) -> Path:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 60, (count,), generator=generator).tolist()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "sequence", "note"])
        for index, length in enumerate(lengths):
            letters = torch.randint(0, 20, (length,), generator=generator).tolist()
            writer.writerow([f"v{index}", "".join(LETTERS[i] for i in letters), "007" if index % 7 == 0 else ""])
    return path


@pytest.mark.parametrize(
    "model_class, config",
    [(LyraForSequenceRegression, {"num_labels": 2}), (LyraForTokenClassification, {"num_labels": 3})],
)
def test_predict_in_two_processes_equals_one_process_value_for_value(tmp_path, monkeypatch, model_class, config):
    two_cpus()
    model = save_checkpoint(tmp_path / "model", model_class, **config)
    flags = ["--model", str(model), "--input", str(write_sequences(tmp_path / "in.csv", 700)), "--batch-size", "32"]
    monkeypatch.setattr(predict_command, "CHUNK_ROWS", 97)  # 8 chunks, the last one short
    assert (
        predict_command.main([*flags, "--output", str(tmp_path / "one.csv"), "--num-processes", "1", "--threads", "1"])
        == 0
    )
    assert predict_command.main([*flags, "--output", str(tmp_path / "two.csv"), "--num-processes", "2"]) == 0
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "two.csv").read_text()


def test_streaming_in_chunks_equals_predicting_the_file_at_once(tmp_path, monkeypatch):
    """Chunks change which sequences share a length bucket, and padding is exact only to float rounding."""
    model = save_checkpoint(tmp_path / "model", num_labels=2)
    flags = ["--model", str(model), "--input", str(write_sequences(tmp_path / "in.csv", 700)), "--num-processes", "1"]
    monkeypatch.setattr(predict_command, "CHUNK_ROWS", 10**6)
    assert predict_command.main([*flags, "--output", str(tmp_path / "whole.csv")]) == 0
    monkeypatch.setattr(predict_command, "CHUNK_ROWS", 97)
    assert predict_command.main([*flags, "--output", str(tmp_path / "chunked.csv")]) == 0
    whole, chunked = (
        list(csv.DictReader((tmp_path / name).read_text().splitlines())) for name in ("whole.csv", "chunked.csv")
    )
    assert len(whole) == len(chunked) == 700
    assert whole[0]["note"] == "007"  # input columns are copied as written
    for a, b in zip(whole, chunked):
        assert (a["name"], a["sequence"], a["note"]) == (b["name"], b["sequence"], b["note"])
        for column in ("predicted_LABEL_0", "predicted_LABEL_1"):
            assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-5)


def test_scan_in_two_processes_equals_one_process(tmp_path):
    two_cpus()
    model = save_checkpoint(tmp_path / "model")
    flags = ["--model", str(model), "--sequence", "MKTAYIAKQRQISFVKSHFSRQ", "--pairs", "3-9", "--no-figures"]
    assert (
        scan_command.main([*flags, "--output-dir", str(tmp_path / "one"), "--num-processes", "1", "--threads", "1"])
        == 0
    )
    assert scan_command.main([*flags, "--output-dir", str(tmp_path / "two"), "--num-processes", "2"]) == 0
    for name in ("singles.csv", "pairs.csv"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()


def test_training_in_two_processes_reaches_the_single_process_metrics(tmp_path):
    """Same seed, same global batch (64 = 2 x 32), a training set of whole batches and no dropout: the same samples
    make each step, and the two processes' averaged gradients equal the one process's up to float rounding. The
    metrics agree to 1e-6: summation order differs (two half-batch means averaged vs one mean, gloo's all-reduce)."""
    two_cpus()
    flags = [
        "--hidden-size",
        "16",
        "--state-size",
        "8",
        "--dropout",
        "0",
        "--max-train-samples",
        "640",
        "--max-eval-samples",
        "101",
        "--epochs",
        "2",
    ]
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"} | {"TQDM_DISABLE": "1"}
    runs = {}
    for name, extra in (("one", ["--num-processes", "1", "--threads", "1"]), ("two", ["--num-processes", "2"])):
        command = [sys.executable, "-m", "lyra_hf.train", *flags, *extra, "--output-dir", str(tmp_path / name)]
        completed = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO, timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert (runs["one"]["num_processes"], runs["two"]["num_processes"]) == (1, 2)
    for single, double in zip(runs["one"]["history"], runs["two"]["history"]):
        for metric in ("spearmanr", "pearsonr", "mse", "r_squared"):
            assert double[metric] == pytest.approx(single[metric], rel=1e-6, abs=1e-6), metric
    assert runs["two"]["test"]["num_samples"] == runs["one"]["test"]["num_samples"] == 101


def test_a_killed_prediction_leaves_its_temporary_file_only_until_the_next_run(tmp_path):
    """SIGKILL runs nothing, so its temporary file stays until the next run that writes the same output removes it
    (SIGTERM and Ctrl-C unwind and remove it at once: tests/test_bad_inputs.py, the interrupt cases)."""
    model = save_checkpoint(tmp_path / "model")
    source = write_sequences(tmp_path / "in.csv", 60_000)
    output = tmp_path / "out" / "predictions.csv"
    output.parent.mkdir()
    command = [
        sys.executable,
        "-m",
        "lyra_hf.predict",
        "--model",
        str(model),
        "--input",
        str(source),
        "--output",
        str(output),
        "--num-processes",
        "1",
    ]
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    process = subprocess.Popen(
        command, env=environment, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not list(output.parent.glob(".predictions.csv.*.tmp")):  # writing has started
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    left = [path.name for path in output.parent.iterdir()]
    assert not output.exists() and len(left) == 1 and left[0].endswith(".tmp")
    # The SIGKILLed run's temporary file goes with the next run that writes the same output.
    small = write_sequences(tmp_path / "small.csv", 10)
    assert predict_command.main(["--model", str(model), "--input", str(small), "--output", str(output)]) == 0
    assert [path.name for path in output.parent.iterdir()] == ["predictions.csv"]


def test_training_processes_share_out_only_steps_with_enough_work():
    from lyra_hf.cpu import MIN_TRAINING_WORK_PER_PROCESS, training_processes

    # The demo: 64 sequences of 30 residues at hidden size 64 is under one process's share.
    assert 64 * 30 * 64 < MIN_TRAINING_WORK_PER_PROCESS
    assert training_processes(2, 64 * 30, 64) == 1
    assert training_processes(2, 64 * 64, 64) == 2
    assert training_processes(2, 64 * 30, 256) == 2  # wider models have more work per token
    assert training_processes(8, 64 * 237, 64) == 7  # never more than the steps share out to
    assert training_processes(1, 10**9, 1024) == 1  # nor more than the CPUs
    assert training_processes(4, 0, 64) == 1


def _double(state, item):
    return state["factor"] * item


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes are forked on Linux only")
def test_worker_pool_keeps_this_process_objects_out_of_collections_while_workers_share_them():
    import gc

    from lyra_hf.cpu import WorkerPool

    assert gc.get_freeze_count() == 0
    with WorkerPool({"factor": 2}, processes=2) as pool:
        assert gc.get_freeze_count() > 0  # a full collection here would copy every page it writes
        assert list(pool.map(_double, range(5))) == [0, 2, 4, 6, 8]
    assert gc.get_freeze_count() == 0
