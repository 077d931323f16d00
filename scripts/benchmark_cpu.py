"""CPU benchmark of the three commands as users run them: wall time, throughput and peak memory, measured side by side
in one run (the machine is shared and noisy, so only ratios within one run mean much).

    python scripts/benchmark_cpu.py --output results/cpu.json

1. The demo (`lyra-train` with no flags) as shipped before one process per CPU (`--num-processes 1`: one process with
   torch's thread count set to the usable CPUs, as torch's default was) and with the new defaults, on the idle machine
   and with a busy loop pinned to CPU 0 (`taskset -c 0 sh -c 'while :; do :; done'`).
2. Training throughput (tokens/s over the training loop, from results.json) at the step the issue measured (batch 64
   of 237-residue random sequences, default model) on one core (`--num-processes 1 --threads 1`) and with the
   defaults, idle and beside the busy loop, over 4 epochs; then the crossover, over one epoch each: tokens/s of one
   process x one thread, one process x two threads and two processes x one thread for tokens per step from 1,920 to
   15,168 at hidden sizes 64 and 256.
   Each training configuration runs `--repeats` times (3), taking turns with the others it is compared with, and its
   median is reported: one epoch is a few seconds, and this machine's speed drifts by tens of percent over minutes.
3. `lyra-predict` on random 200-letter protein rows: peak memory of the whole process tree (PSS, sampled every second)
   and the kernel's peak RSS of the command's process and of its largest worker, and rows/s over the command's wall
   time (4-10 s of it, by machine, is importing torch and transformers) and over the prediction itself (the rate its
   closing
   line gives), on all cores, and on one core for the middle size (the two taking turns `--repeats` times).
4. `lyra-scan` of a 237-letter wild type: every single mutant (4,503), and every double mutant of 10 positions, on one
   core and on all cores: the command's wall time, and the scoring alone (`lyra_hf.scan.scan` in this process,
   timed without the imports and checkpoint loading that every command pays first).

Run it with nothing else running; it starts its own busy loop where it says so.
"""

import argparse
import csv
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


LETTERS = "ACDEFGHIKLMNPQRSTVWY"
ONE_CORE = ["--num-processes", "1", "--threads", "1"]
THROUGHPUT_EPOCHS = 4


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (those alive now)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def tree_memory(pid: int) -> int:
    """Memory of a process and all its descendants, in bytes (0 once gone): the sum of their proportional set sizes
    (PSS), so pages that forked workers share with their parent count once, not once per process as RSS would."""
    total = 0
    for current in process_tree(pid):
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            total += next(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            continue
    return total


def peak_rss(pid: int) -> int | None:
    """The kernel's own record of a process's peak resident set (VmHWM), in bytes: exact however rarely it is read,
    but it counts the pages a forked worker shares with its parent in both."""
    try:
        return next(
            int(line.split()[1]) * 1024
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    except (OSError, StopIteration, ValueError):
        return None


def run(command: list[str], label: str, sample_memory: bool = False) -> dict:
    """Run a command to its end; its wall time and, with `sample_memory`, the peak memory of its process tree (PSS),
    read once a second (reading a process's memory map holds its mmap lock, and frequent reads slowed the measured
    command several times over: a first attempt sampled every 0.1 s), and the peak RSS of the command's own process
    and of its largest worker, as the kernel recorded them (read every 0.1 s, up to each process's end)."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"} | {"TQDM_DISABLE": "1"}
    # Output goes to files: a pipe nobody reads until the end fills up and stops the command.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=environment, stdout=out, stderr=err, text=True)
        peak, rss, last_sample = None, {}, 0.0
        while process.poll() is None:
            if sample_memory:
                for member in process_tree(process.pid):
                    rss[member] = max(rss.get(member, 0), peak_rss(member) or 0)
                if time.perf_counter() - last_sample >= 1.0:
                    peak, last_sample = max(peak or 0, tree_memory(process.pid)), time.perf_counter()
            time.sleep(0.1 if sample_memory else 0.05)
        seconds = time.perf_counter() - started
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"{label} failed:\n{stderr[-3000:]}")
    main_rss = rss.pop(process.pid, None)
    worker_rss = max(rss.values(), default=None)
    memory = f", peak {peak / 2**20:,.0f} MiB (PSS), RSS {(main_rss or 0) / 2**20:,.0f} MiB" if peak else ""
    memory += f", worker RSS {worker_rss / 2**20:,.0f} MiB" if peak and worker_rss else ""
    print(f"{label}: {seconds:.1f} s{memory}", file=sys.stderr, flush=True)
    return {
        "command": " ".join(command),
        "seconds": seconds,
        "peak_memory_bytes": peak,
        "peak_rss_bytes": main_rss,
        "peak_worker_rss_bytes": worker_rss,
        "stdout": stdout.strip().splitlines()[-1:],
    }


class BusyNeighbour:
    """A shell busy loop pinned to CPU 0 for the length of the block."""

    def __enter__(self):
        self.process = subprocess.Popen(["taskset", "-c", "0", "sh", "-c", "while :; do :; done"])
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def lyra(command: str) -> list[str]:
    return [sys.executable, "-m", f"lyra_hf.{command}"]


def demo(work: Path) -> dict:
    results = {}
    for condition in ("idle", "busy neighbour"):
        for name, flags in (("old", ["--num-processes", "1"]), ("new", [])):
            folder = work / f"demo_{name}_{condition.replace(' ', '_')}"
            label = f"demo {name} defaults, {condition}"
            command = [*lyra("train"), *flags, "--output-dir", str(folder)]
            results[label] = run(command, label) if condition == "idle" else busy(run, command, label)
            results[label]["results"] = json.loads((folder / "results.json").read_text())
    return results


# (hidden size, sequence length) of the crossover runs, batch 64: tokens per step from the demo's 1,920 to the 15,168
# of the step the issue measured (batch 64, L = 237), at the default width and four times it.
CROSSOVER_SIZES = [(64, 30), (64, 64), (64, 100), (64, 237), (256, 30), (256, 100)]
CROSSOVER_LAYOUTS = {
    "1 process x 1 thread": ["--num-processes", "1", "--threads", "1"],
    "1 process x 2 threads": ["--num-processes", "1", "--threads", "2"],
    "2 processes x 1 thread": ["--num-processes", "2", "--threads", "1"],
}


def write_labelled_rows(path: Path, count: int, length: int) -> Path:
    generator = torch.Generator().manual_seed(length)
    letters = torch.randint(0, len(LETTERS), (count, length), generator=generator).tolist()
    labels = torch.randn(count, generator=generator).tolist()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", "label"])
        writer.writerows(
            ("".join(LETTERS[i] for i in residues), f"{label:.4f}") for residues, label in zip(letters, labels)
        )
    return path


def train_tokens_per_second(
    work: Path, hidden_size: int, length: int, flags: list[str], label: str, epochs: int = 1
) -> dict:
    """`epochs` epochs of `lyra-train` on random labelled sequences of one length (about 400,000 tokens an epoch at
    hidden size 64, a quarter of that at 256); tokens/s over the training loop, from results.json."""
    tokens = 400_000 * 64 // hidden_size
    source = work / f"train_{hidden_size}_{length}.csv"
    if not source.exists():
        write_labelled_rows(source, int(tokens / length / 0.9), length)
    folder = work / f"train_{hidden_size}_{length}_{len(list(work.iterdir()))}"
    command = [*lyra("train"), "--train-file", str(source), "--hidden-size", str(hidden_size), "--epochs", str(epochs)]
    command += ["--max-eval-samples", "128", "--output-dir", str(folder), *flags]
    result = run(command, label)
    results = json.loads((folder / "results.json").read_text())
    return {
        **result,
        "tokens_per_second": results["samples_per_second"] * length,
        "num_processes": results["num_processes"],
    }


def round_robin(runs: dict, repeats: int) -> dict:
    """Each of `runs` (label: a function returning `train_tokens_per_second`'s dict) `repeats` times, taking turns, so
    that a slow spell of the shared machine falls on every configuration alike; each label's result is its last run
    with the median tokens/s and every run's tokens/s."""
    results = {label: [] for label in runs}
    for _ in range(repeats):
        for label, function in runs.items():
            results[label].append(function())
    return {
        label: {
            **measured[-1],
            "tokens_per_second": statistics.median(run["tokens_per_second"] for run in measured),
            "tokens_per_second_runs": [run["tokens_per_second"] for run in measured],
        }
        for label, measured in results.items()
    }


def crossover(work: Path, repeats: int) -> dict:
    """Tokens/s of one training epoch for each size and layout of threads and processes, idle."""
    results = {}
    for hidden_size, length in CROSSOVER_SIZES:
        runs = {}
        for layout, flags in CROSSOVER_LAYOUTS.items():
            label = f"hidden {hidden_size}, L {length} ({64 * length:,} tokens a step): {layout}"
            runs[label] = functools.partial(train_tokens_per_second, work, hidden_size, length, flags, label)
        for label, result in round_robin(runs, repeats).items():
            results[label] = {
                "hidden_size": hidden_size,
                "length": length,
                "layout": label.rsplit(": ", 1)[1],
                **result,
            }
    return results


def training_throughput(work: Path, repeats: int) -> dict:
    """The step the issue measured (batch 64 of 237-residue sequences, default model): one core against the default,
    over `THROUGHPUT_EPOCHS` epochs (~120 steps), so that what a run pays once (DDP's first iteration, each process's
    first allocations) weighs on the rate about as little as on a real training run, not as on the crossover's one
    epoch of ~30 steps."""
    return round_robin(
        {
            "one core": functools.partial(
                train_tokens_per_second,
                work,
                64,
                237,
                ONE_CORE,
                "training on one core (batch 64, L 237)",
                THROUGHPUT_EPOCHS,
            ),
            "all cores": functools.partial(
                train_tokens_per_second,
                work,
                64,
                237,
                [],
                "training with the defaults (batch 64, L 237)",
                THROUGHPUT_EPOCHS,
            ),
            "all cores, busy neighbour": functools.partial(
                busy,
                train_tokens_per_second,
                work,
                64,
                237,
                [],
                "training with the defaults beside the busy loop",
                THROUGHPUT_EPOCHS,
            ),
        },
        repeats,
    )


def busy(function, *args):
    with BusyNeighbour():
        return function(*args)


def write_rows(path: Path, count: int, length: int = 200) -> Path:
    generator = torch.Generator().manual_seed(count)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "sequence"])
        for start in range(0, count, 10_000):
            letters = torch.randint(0, len(LETTERS), (min(10_000, count - start), length), generator=generator).tolist()
            writer.writerows(
                (f"v{start + row}", "".join(LETTERS[i] for i in residues)) for row, residues in enumerate(letters)
            )
    return path


def default_checkpoint(work: Path) -> Path:
    from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer

    torch.manual_seed(0)
    tokenizer = LyraTokenizer()
    LyraForSequenceRegression(LyraConfig(vocab_size=len(tokenizer))).save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    return work / "model"


def prediction(work: Path, model: Path, sizes: list[int], one_core_size: int, repeats: int) -> dict:
    """lyra-predict on all cores for each size; at `one_core_size` also on one core, the two taking turns `repeats`
    times (medians of the rates, the largest of the peaks)."""
    results = {}
    for count in sizes:
        source = write_rows(work / f"rows_{count}.csv", count)
        runs = [("all cores", [])] + ([("one core", ONE_CORE)] if count == one_core_size else [])
        measured = {cores: [] for cores, _ in runs}
        for _ in range(repeats if len(runs) > 1 else 1):
            for cores, flags in runs:
                label = f"predict {count:,} rows, {cores}"
                output = work / f"predictions_{count}_{cores.replace(' ', '_')}.csv"
                output.unlink(missing_ok=True)
                result = run(
                    [*lyra("predict"), "--model", str(model), "--input", str(source), "--output", str(output), *flags],
                    label,
                    sample_memory=True,
                )
                # The command's closing line times the prediction itself: reading, predicting and writing, after the
                # imports, the checkpoint and the check of every row.
                predicting = float(re.search(r"in ([\d.]+) s,", result["stdout"][-1]).group(1))
                measured[cores].append(
                    {
                        **result,
                        "rows_per_second": count / result["seconds"],
                        "predicting_rows_per_second": count / predicting,
                    }
                )
        for cores, runs_of_cores in measured.items():
            results[f"predict {count:,} rows, {cores}"] = {
                **runs_of_cores[-1],
                "rows": count,
                "runs": len(runs_of_cores),
                **{
                    key: statistics.median(run[key] for run in runs_of_cores)
                    for key in ("seconds", "rows_per_second", "predicting_rows_per_second")
                },
                **{
                    key: max(run[key] or 0 for run in runs_of_cores)
                    for key in ("peak_memory_bytes", "peak_rss_bytes", "peak_worker_rss_bytes")
                },
                "predicting_rows_per_second_runs": [run["predicting_rows_per_second"] for run in runs_of_cores],
            }
        source.unlink()
    return results


def scanning(work: Path, model: Path) -> dict:
    generator = torch.Generator().manual_seed(237)
    wild_type = "".join(LETTERS[i] for i in torch.randint(0, len(LETTERS), (237,), generator=generator).tolist())
    results = {}
    for scan_name, flags in (("singles (4,503 mutants)", []), ("doubles of 10 positions", ["--pairs", "100-109"])):
        for cores, cpu_flags in (("one core", ONE_CORE), ("all cores", [])):
            label = f"scan {scan_name}, {cores}"
            folder = work / f"scan_{len(results)}"
            command = [
                *lyra("scan"),
                "--model",
                str(model),
                "--sequence",
                wild_type,
                "--no-figures",
                "--output-dir",
                str(folder),
                *flags,
                *cpu_flags,
            ]
            results[label] = run(command, label)
    # The scoring alone, as a library call: one single-threaded process against one worker per usable CPU.
    from lyra_hf import retain_freed_memory
    from lyra_hf.checkpoints import load_checkpoint
    from lyra_hf.cpu import usable_cpus
    from lyra_hf.scan import scan

    tokenizer, loaded = load_checkpoint(str(model))
    torch.set_num_threads(1)
    retain_freed_memory()  # as the commands do
    for scan_name, pairs in (("singles (4,503 mutants)", None), ("doubles of 10 positions", list(range(100, 110)))):
        scan(loaded, tokenizer, wild_type, pairs=pairs, progress=False)  # warm-up: the kernel cache, first allocations
        for cores, processes in (("one core", 1), ("all cores", usable_cpus())):
            started = time.perf_counter()
            scan(loaded, tokenizer, wild_type, pairs=pairs, progress=False, processes=processes)
            results[f"scan {scan_name}, scoring alone, {cores}"] = {
                "seconds": time.perf_counter() - started,
                "processes": processes,
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/cpu.json")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="lyra-predict row counts")
    parser.add_argument("--one-core-size", type=int, default=100_000, help="the row count also predicted on one core")
    parser.add_argument("--parts", default="demo,train,predict,scan", help="which parts to run")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each training configuration and of lyra-predict on one core and on all, taking turns (medians "
        "reported)",
    )
    args = parser.parse_args()
    from lyra_hf.cpu import usable_cpus

    parts = args.parts.split(",")
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {usable_cpus()} usable; {platform.platform()}",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(sys.argv),
    }
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if "demo" in parts:
            report["demo"] = demo(work)
        if "train" in parts:
            report["training"] = training_throughput(work, args.repeats)
            report["crossover"] = crossover(work, args.repeats)
        model = default_checkpoint(work)
        if "predict" in parts:
            report["predict"] = prediction(
                work, model, [int(size) for size in args.sizes.split(",")], args.one_core_size, args.repeats
            )
        if "scan" in parts:
            report["scan"] = scanning(work, model)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
