"""Seed ensemble on the Gifford antibody data: does the mean of N members beat one member, and does their spread rank
the ensemble's own errors?

    python scripts/benchmark_ensemble.py [--members 5] [--seed 42] [--runs-dir runs/ensemble] [lyra-train flags]

One `lyra-train --ensemble N` run under the honest protocol of `benchmark_accuracy.py` (each member's epoch chosen on
a validation split carved from train, the same split for every member; the whole test set scored once), then
`lyra-predict` of the ensemble on the test file. Reports the ensemble's test Spearman, each member's and their mean,
the gain, and the Spearman correlation between the ensemble's absolute error and its standard deviation over members
on the test rows (positive: rows the members disagree on are the rows it gets wrong). An interrupted run continues
(`--resume-from-checkpoint latest`). Writes RUNS_DIR/ensemble.md and .json.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchmark_accuracy import DATA, command
from scipy.stats import spearmanr


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--runs-dir", default="runs/ensemble")
    args, train_flags = parser.parse_known_args()
    if not DATA.is_dir():
        sys.exit(f"benchmark_ensemble: no data at {DATA} (the shared Gifford data, next to the repository)")
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    started = time.time()
    run_dir = runs_dir / f"ensemble_{args.members}"
    train = command(args.seed, run_dir, args.epochs, ["--ensemble", str(args.members), "--quiet", *train_flags])
    with open(runs_dir / "train.log", "w") as log:
        if subprocess.run(train, stdout=log, stderr=subprocess.STDOUT, env=environment).returncode != 0:
            sys.exit(f"benchmark_ensemble: training failed, see {runs_dir / 'train.log'}")
    train_seconds = time.time() - started
    predictions = runs_dir / "test_predictions.csv"
    predict = [
        sys.executable,
        "-m",
        "lyra_hf.predict",
        "--model",
        str(run_dir / "best"),
        "--input",
        str(DATA / "test.csv"),
        "--sequence-column",
        "CDR3",
        "--output",
        str(predictions),
        "--overwrite",
    ]
    with open(runs_dir / "predict.log", "w") as log:
        if subprocess.run(predict, stdout=log, stderr=subprocess.STDOUT, env=environment).returncode != 0:
            sys.exit(f"benchmark_ensemble: prediction failed, see {runs_dir / 'predict.log'}")

    results = json.loads((run_dir / "results.json").read_text())
    with open(predictions, newline="") as handle:
        rows = list(csv.DictReader(handle))
    truth = np.array([float(row["enrichment"]) for row in rows])
    mean = np.array([float(row["predicted_enrichment"]) for row in rows])
    spread = np.array([float(row["predicted_enrichment_std"]) for row in rows])
    # The rank of the error among test rows: the prediction is on another scale than the labels (Spearman-chosen
    # epochs do not calibrate it), so the error is taken between ranks, as Spearman itself compares them.
    rank_error = np.abs(np.argsort(np.argsort(mean)) - np.argsort(np.argsort(truth))) / len(truth)
    error_vs_spread = float(spearmanr(np.abs(mean - truth), spread)[0])
    rank_error_vs_spread = float(spearmanr(rank_error, spread)[0])
    members = results["members"]
    lines = ["| model | validation Spearman | test Spearman |", "| --- | ---: | ---: |"]
    for name, member in members.items():
        lines.append(
            f"| {name} (seed {member['seed']}, epoch {member['best_epoch']}) | {member['validation']['spearmanr']:.4f} "
            f"| {member['test']['spearmanr']:.4f} |"
        )
    member_mean, member_std = results["members_mean"], results["members_std"]
    lines.append(
        f"| members' mean (sd) | {member_mean['validation']['spearmanr']:.4f} | {member_mean['test']['spearmanr']:.4f} "
        f"({member_std['test']['spearmanr']:.4f}) |"
    )
    gain = results["test"]["spearmanr"] - member_mean["test"]["spearmanr"]
    lines.append(
        f"| **ensemble of {args.members}** (mean prediction) | {results['validation']['spearmanr']:.4f} | "
        f"**{results['test']['spearmanr']:.4f}** |"
    )
    table = "\n".join(lines)
    summary = (
        f"Gain of the ensemble over the members' mean: {gain:+.4f} test Spearman.\n"
        f"Uncertainty on the {len(truth):,} test rows: Spearman(|error|, std) = {error_vs_spread:.4f}; "
        f"Spearman(|rank error|, std) = {rank_error_vs_spread:.4f}.\n"
        f"Training {train_seconds:,.0f} s wall for {args.members} members."
    )
    print(table + "\n\n" + summary)
    content = {
        "members": args.members,
        "seed": args.seed,
        "train_flags": train_flags,
        "ensemble_test_spearmanr": results["test"]["spearmanr"],
        "members_test_spearmanr": [member["test"]["spearmanr"] for member in members.values()],
        "members_mean_test_spearmanr": member_mean["test"]["spearmanr"],
        "gain": gain,
        "spearman_abs_error_vs_std": error_vs_spread,
        "spearman_rank_error_vs_std": rank_error_vs_spread,
        "test_rows": len(truth),
        "train_wall_seconds": train_seconds,
    }
    for name, text in (
        ("ensemble.md", table + "\n\n" + summary + "\n"),
        ("ensemble.json", json.dumps(content, indent=2)),
    ):
        (runs_dir / f".{name}.tmp").write_text(text)
        os.replace(runs_dir / f".{name}.tmp", runs_dir / name)


if __name__ == "__main__":
    main()
