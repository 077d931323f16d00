"""Accuracy on the shared benchmark data, honest protocol: `lyra-train` (validation chooses, test is scored once) next
to the one-hot baseline every run fits, at full size and on random training subsets.

    python scripts/benchmark_accuracy.py --data gfp --train-rows 384 2000 --seeds 0 1 2 --tag defaults
    python scripts/benchmark_accuracy.py --data gifford conservation --tag defaults --budget-minutes 10
    python scripts/benchmark_accuracy.py --data gfp --train-rows 384 --seeds 0 --tag lr1e-2 -- --learning-rate 1e-2
    python scripts/benchmark_accuracy.py --table runs/accuracy                       # the table of every finished run

Data (`../shared/data/`, see its README): `gifford` (antibody CDR3 enrichment), `gfp` (GFP brightness) and
`conservation` (FLIP's per-residue conservation classes, its own `set`/`validation` columns). `--train-rows N` trains
on N random training rows (drawn with the run's seed; validation is carved from them; the full test set is scored).
Each run lands in RUNS_DIR/DATA-ROWS-seedS-TAG; one that holds a results.json is reused. Flags after `--` go to every
lyra-train run. Prints, and writes to RUNS_DIR/accuracy.md, one row per data set, size and tag: the mean and range
over seeds of the model's and the baseline's test metric, and the model's validation metric.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA = {
    "gifford": {
        "files": ["--train-file", "gifford/train.csv", "--test-file", "gifford/test.csv"],
        "flags": ["--sequence-column", "CDR3", "--label-columns", "enrichment", "--padding-characters", "J"],
    },
    "gfp": {"files": ["--train-file", "gfp/train.csv", "--test-file", "gfp/test.csv"], "flags": ["--label-columns", "label"]},
    "conservation": {
        "files": ["--train-file", "conservation/conservation.csv"],
        "flags": ["--split-column", "set", "--validation-column", "validation", "--task", "token-classification", "--label-columns", "conservation"],
    },
}


def subset(name: str, rows: int, seed: int, folder: Path) -> Path:
    """`rows` random training rows of a data set (by `seed`), written once as a CSV of their own."""
    path = folder / f"{name}-train-{rows}-seed{seed}.csv"
    if not path.exists():
        with open(SHARED / name / "train.csv", newline="") as handle:
            reader = csv.reader(handle)
            header, table = next(reader), list(reader)
        chosen = np.random.default_rng(seed).permutation(len(table))[:rows]
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *(table[index] for index in sorted(chosen))])
    return path


def run(name: str, rows: int | None, seed: int, tag: str, runs_dir: Path, budget: float | None, extra: list[str]) -> Path:
    folder = runs_dir / f"{name}-{rows or 'all'}-seed{seed}-{tag}"
    if (folder / "results.json").exists():
        return folder
    files = [str(SHARED / value) if value.endswith(".csv") else value for value in DATA[name]["files"]]
    if rows:
        files[files.index("--train-file") + 1] = str(subset(name, rows, seed, runs_dir / "data"))
    command = [sys.executable, "-m", "lyra_hf.train", *files, *DATA[name]["flags"], "--seed", str(seed), "--quiet"]
    command += ["--output-dir", str(folder), "--overwrite-output-dir", *(["--max-train-minutes", str(budget)] if budget else []), *extra]
    started = time.time()
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if completed.returncode != 0:
        sys.exit(f"benchmark_accuracy: {folder.name} failed:\n{completed.stderr[-3000:]}")
    print(f"{folder.name}: {completed.stdout.strip()} ({time.time() - started:.0f} s)", flush=True)
    return folder


def run_minutes(results: dict) -> float:
    """A run's training loop, or a --tune search's trials and choice, in minutes."""
    return (results.get("fit_seconds") or results.get("search", {}).get("seconds") or 0) / 60


def table(runs_dir: Path) -> str:
    """One row per data set, size and tag, over the seeds that finished."""
    groups = {}
    for path in sorted(runs_dir.glob("*/results.json")):
        name, rows, seed, tag = path.parent.name.split("-", 3)
        groups.setdefault((name, rows, tag), []).append(json.loads(path.read_text()))
    lines = ["| data | train rows | tag | seeds | test (model) | test (baseline) | validation (model) | validation (baseline) | fit minutes |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (name, rows, tag), runs in sorted(groups.items()):
        metric = runs[0]["metric_for_best_model"]

        def summary(values):
            values = [value for value in values if value is not None]
            if not values:
                return "-"
            return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else f"{values[0]:.3f}"

        baseline = [run.get("baseline") or {} for run in runs]
        lines.append(
            f"| {name} | {rows} | {tag} | {len(runs)} | {summary([run['test'][metric] for run in runs])} | "
            f"{summary([entry.get('test', {}).get(metric) for entry in baseline])} | {summary([run['validation'][metric] for run in runs])} | "
            f"{summary([entry.get('validation', {}).get(metric) for entry in baseline])} | {summary([run_minutes(run) for run in runs])} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", choices=list(DATA), default=list(DATA))
    parser.add_argument("--train-rows", type=int, nargs="+", default=[0], help="random training subsets (0: all rows)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tag", default="defaults", help="names this configuration in the run folders and the table")
    parser.add_argument("--budget-minutes", type=float, help="--max-train-minutes of every run")
    parser.add_argument("--runs-dir", default="runs/accuracy")
    parser.add_argument("--table", metavar="RUNS_DIR", help="only print the table of the runs in RUNS_DIR")
    args, extra = parser.parse_known_args()
    extra = [flag for flag in extra if flag != "--"]
    if args.table:
        print(table(Path(args.table)))
        return
    if not SHARED.is_dir():
        sys.exit(f"benchmark_accuracy: no data at {SHARED} (the shared benchmark data, next to the repository)")
    runs_dir = Path(args.runs_dir)
    for name in args.data:
        for rows in args.train_rows:
            for seed in args.seeds:
                run(name, rows or None, seed, args.tag, runs_dir, args.budget_minutes, extra)
    text = table(runs_dir)
    (runs_dir / "accuracy.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
