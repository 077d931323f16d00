"""Honest Gifford accuracy: `lyra-train` with the default model on the shared antibody CDR3 data, several seeds.

    python scripts/benchmark_accuracy.py [--seeds 42 1 2] [--parallel 2] [--runs-dir runs/accuracy] [lyra-train flags]

Each seed is one `lyra-train` run (validation split carved from train with that seed picks the epoch; the whole test
set is scored once). A seed whose run directory already holds a `results.json` is reused, so an interrupted benchmark
continues where it stopped. Any other flag goes to every `lyra-train` run (e.g. `--ema-decay 0.999`: compare such
variations by their mean validation Spearman, never by test). Prints and writes (RUNS_DIR/accuracy.md, .json) the
per-seed and mean validation and test Spearman.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gifford"


def command(seed: int, run_dir: Path, epochs: int, train_flags: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "lyra_hf.train",
        "--train-file", str(DATA / "train.csv"), "--test-file", str(DATA / "test.csv"),
        "--sequence-column", "CDR3", "--label-columns", "enrichment", "--padding-characters", "J",
        "--epochs", str(epochs), "--seed", str(seed), "--output-dir", str(run_dir), "--resume-from-checkpoint", "latest",
        *train_flags,
    ]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (each with cores / parallel threads)")
    parser.add_argument("--runs-dir", default="runs/accuracy")
    args, train_flags = parser.parse_known_args()
    if not DATA.is_dir():
        sys.exit(f"benchmark_accuracy: no data at {DATA} (the shared Gifford data, next to the repository)")
    runs_dir = Path(args.runs_dir)
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    runs_dir.mkdir(parents=True, exist_ok=True)
    pending = [seed for seed in args.seeds if not (runs_dir / f"seed_{seed}" / "results.json").exists()]
    running, started = {}, time.time()
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            log = open(runs_dir / f"seed_{seed}.log", "w")
            running[seed] = subprocess.Popen(command(seed, runs_dir / f"seed_{seed}", args.epochs, train_flags), stdout=log, stderr=subprocess.STDOUT, env=environment)
        for seed, process in list(running.items()):
            if process.poll() is not None:
                if process.returncode != 0:
                    sys.exit(f"benchmark_accuracy: seed {seed} failed, see {runs_dir / f'seed_{seed}.log'}")
                del running[seed]
        time.sleep(5)

    results = {seed: json.loads((runs_dir / f"seed_{seed}" / "results.json").read_text()) for seed in args.seeds}
    scores = [results[seed]["test"]["spearmanr"] for seed in args.seeds]
    validation_scores = [results[seed]["validation"]["spearmanr"] for seed in args.seeds]
    lines = [
        "| seed | best epoch | validation Spearman | test Spearman | parameters | training time |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for seed in args.seeds:
        result = results[seed]
        lines.append(
            f"| {seed} | {result['best_epoch']} | {result['validation']['spearmanr']:.4f} | {result['test']['spearmanr']:.4f} "
            f"| {result['num_parameters']:,} | {result['train_seconds']:,.0f} s |"
        )
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    lines.append(f"| mean | | {statistics.mean(validation_scores):.4f} | **{statistics.mean(scores):.4f}** (sd {spread:.4f}) | | |")
    table = "\n".join(lines)
    print(table)
    summary = {
        "seeds": args.seeds, "train_flags": train_flags, "validation_spearmanr": validation_scores, "test_spearmanr": scores,
        "mean": statistics.mean(scores),
    }  # fmt: skip
    for name, content in (("accuracy.md", table + "\n"), ("accuracy.json", json.dumps(summary, indent=2))):
        (runs_dir / f".{name}.tmp").write_text(content)
        os.replace(runs_dir / f".{name}.tmp", runs_dir / name)
    print(f"({time.time() - started:,.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
