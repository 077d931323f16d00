"""Accuracy in regimes, honest protocol: `lyra-train` (validation chooses, test is scored once) next to the one-hot
baseline every run fits, for each candidate configuration, data set, regime, training size and seed.

    python scripts/benchmark_accuracy.py --data gfp --regimes random --train-rows 384 2000 --seeds 0 1 2 --tag defaults
    python scripts/benchmark_accuracy.py --data gfp synthetic dna-motif --seeds 0 1 2 --train-rows 2000 --jobs 2 \\
        --candidates defaults plain
    python scripts/benchmark_accuracy.py --data proteingym --regimes unseen-modulo unseen-contiguous --tag defaults
    python scripts/benchmark_accuracy.py --data gifford conservation --tag defaults --budget-minutes 10
    python scripts/benchmark_accuracy.py --table runs/accuracy                # the table of every finished run

Regimes and data sets: `scripts/regimes.py` (random; upward: train low, test high; mutations: train on at most 2
substitutions, test on more; unseen positions: ProteinGym's modulo and contiguous folds; and `dna-motif` and Gifford,
sequences of one length that are not variants of one sequence). `conservation` is FLIP's per-residue set with its own
`set`/`validation` columns. `--train-rows N` trains on N random training rows of the regime's train split (drawn with
the run's seed; validation is carved from them; the whole test split is scored). Without `--regimes`, each data set
runs in all of its regimes. Each run lands in RUNS_DIR/DATA/REGIME/ROWS-seedS-TAG; one that holds a results.json is
reused. Flags after `--` go to every lyra-train run; `--jobs 2` runs two single-process runs side by side (right for
accuracy without a time budget, not for speed). Prints, and writes to RUNS_DIR/accuracy.md, one row per data set,
regime, size and tag: the mean and range over seeds of the model's and the baseline's test metric (the mean over
folds for cross-validation), and the model's validation metric.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from regimes import REGIMES, SHARED, proteingym_assays, regime_files


CONSERVATION = {
    "files": ["--train-file", str(SHARED / "conservation/conservation.csv")],
    "flags": [
        "--split-column",
        "set",
        "--validation-column",
        "validation",
        "--task",
        "token-classification",
        "--label-columns",
        "conservation",
    ],
}
PROTEINGYM_REGIMES = ("random", "unseen-modulo", "unseen-contiguous")
# Named configurations (`--candidates`): lyra-train's flags for each. `defaults` is whatever lyra-train does unasked.
CANDIDATES = {
    "defaults": [],
    "plain": ["--site-effects", "off", "--global-epistasis", "off"],
    "full": ["--site-effects", "on", "--global-epistasis", "on"],
    "curve-only": ["--site-effects", "off", "--global-epistasis", "on"],
    "sites-only": ["--site-effects", "on", "--global-epistasis", "off"],
}


def subset(name: str, rows: int, seed: int, folder: Path) -> Path:
    """`rows` random rows of a shared data set's train file (by `seed`), written once as a CSV of their own."""
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


def regimes_of(name: str) -> tuple[str, ...]:
    return (
        ("random",) if name == "conservation" else PROTEINGYM_REGIMES if name in proteingym_assays() else REGIMES[name]
    )


def command(name: str, regime: str, rows: int | None, seed: int, runs_dir: Path) -> list[str]:
    """lyra-train's data flags for one run."""
    if name == "conservation":
        return [*CONSERVATION["files"], *CONSERVATION["flags"]]
    files, flags = regime_files(name, regime, rows, seed, runs_dir / "data")
    return [*files, *flags]


def run(
    name: str,
    regime: str,
    rows: int | None,
    seed: int,
    tag: str,
    runs_dir: Path,
    budget: float | None,
    extra: list[str],
) -> Path:
    folder = runs_dir / name / regime / f"{rows or 'all'}-seed{seed}-{tag}"
    if (folder / "results.json").exists():
        return folder
    data = command(name, regime, rows, seed, runs_dir)
    arguments = [
        sys.executable,
        "-m",
        "lyra_hf.train",
        *data,
        "--seed",
        str(seed),
        "--quiet",
        "--output-dir",
        str(folder),
    ]
    arguments += ["--overwrite-output-dir", *(["--max-train-minutes", str(budget)] if budget else []), *extra]
    started = time.time()
    completed = subprocess.run(arguments, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if completed.returncode != 0:
        sys.exit(f"benchmark_accuracy: {folder} failed:\n{completed.stderr[-3000:]}")
    print(f"{folder.relative_to(runs_dir)}: {completed.stdout.strip()} ({time.time() - started:.0f} s)", flush=True)
    return folder


def scores(results: dict) -> tuple[float | None, float | None, float | None]:
    """The model's test metric, the baseline's and the model's validation metric (cross-validation: folds' means)."""
    metric = results["metric_for_best_model"]
    if "test_mean" in results:
        baseline = (results.get("baseline") or {}).get("test_mean", {}).get(metric)
        folds = results["folds"].values()
        validation = [fold.get("validation", {}).get(metric) for fold in folds]
        return (
            results["test_mean"].get(metric),
            baseline,
            statistics.mean(validation) if None not in validation else None,
        )
    baseline = (results.get("baseline") or {}).get("test") or {}
    return (results.get("test") or {}).get(metric), baseline.get(metric), results["validation"].get(metric)


def summary(values: list) -> str:
    values = [value for value in values if value is not None]
    if not values:
        return "-"
    return (
        f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"
        if len(values) > 1
        else f"{values[0]:.3f}"
    )


def rechosen(folder: Path) -> str:
    """The candidate lyra_hf's rule as it stands keeps for a run made with candidates (its choice read again from the
    candidates' best models and validation split), whatever rule the run itself had."""
    from lyra_hf.data.library import LibraryCheck
    from lyra_hf.training.candidates import choose, validation_predictions
    from lyra_hf.training.options import TrainOptions

    recorded = json.loads((folder / "results.json").read_text())["components"]["candidates"]
    if not recorded["views"]:
        return recorded["chosen"]  # validation too small: only the data kind's candidate was trained
    names = ("plain", "full")
    runs = {
        name: TrainOptions(**json.loads((folder / "candidates" / name / "options.json").read_text())) for name in names
    }
    predictions, labels = validation_predictions(runs)
    seed = runs["full"].data_seed
    return choose(predictions, labels, LibraryCheck(**recorded["library"]), seed)[0]


def candidate_scores(folder: Path, rechoose: bool = False) -> dict[str, tuple]:
    """A run's test scores as `scores` reads them: the kept model's (`defaults`), and where lyra-train chose between
    candidates (`candidates/<name>/`; for cross-validation, in each fold), each candidate's, which are the same runs a
    separate `--site-effects on/off` run would make. With `rechoose`, `defaults` is the candidate the current rule
    keeps (`rechosen`)."""
    results = json.loads((folder / "results.json").read_text())
    entries = {"defaults": scores(results)}
    if (folder / "candidates").is_dir():
        for candidate in sorted((folder / "candidates").iterdir()):
            entries[candidate.name] = scores(json.loads((candidate / "results.json").read_text()))
        if rechoose:
            entries["defaults"] = entries[rechosen(folder)]
    folds = sorted(folder.glob("fold_*/candidates/*/results.json"))
    for name in sorted({path.parent.name for path in folds}):
        per_fold = [json.loads(path.read_text()) for path in folds if path.parent.name == name]
        metric = per_fold[0]["metric_for_best_model"]
        entries[name] = (statistics.mean(run["test"][metric] for run in per_fold), None, None)
    return entries


def table(runs_dir: Path, rechoose: bool = False) -> str:
    """One row per data set, regime, size and configuration, over the seeds that finished: a tag's runs, and the
    candidates each lyra-train run chose between (`rechoose`: the choice read again with the current rule)."""
    groups = {}
    for path in sorted(runs_dir.glob("*/*/*/results.json")):
        name, regime = path.parts[-4], path.parts[-3]
        rows, seed, tag = path.parent.name.split("-", 2)
        for configuration, entry in candidate_scores(path.parent, rechoose).items():
            label = tag if configuration == "defaults" else f"{tag}: {configuration}"
            groups.setdefault((name, regime, rows, label), []).append(entry)
    lines = [
        "| data | regime | train rows | configuration | seeds | test (model) | test (one-hot ridge) | validation "
        "(model) |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for (name, regime, rows, tag), runs in sorted(groups.items()):
        model, baseline, validation = zip(*runs)
        lines.append(
            f"| {name} | {regime} | {rows} | {tag} | {len(runs)} | {summary(model)} | {summary(baseline)} | "
            f"{summary(validation)} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", nargs="+", default=["gfp", "synthetic", "dna-motif"], help="data sets; proteingym: its assays"
    )
    parser.add_argument("--regimes", nargs="+", help="default: every regime of each data set")
    parser.add_argument("--train-rows", type=int, nargs="+", default=[0], help="random training subsets (0: all rows)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--tag", help="names the configuration the flags after -- make, in the run folders and the table"
    )
    parser.add_argument(
        "--candidates", nargs="+", choices=list(CANDIDATES), default=[], help="named configurations to run too"
    )
    parser.add_argument("--budget-minutes", type=float, help="--max-train-minutes of every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side, one process each")
    parser.add_argument("--runs-dir", default="runs/accuracy")
    parser.add_argument("--table", metavar="RUNS_DIR", help="only print the table of the runs in RUNS_DIR")
    parser.add_argument(
        "--rechoose", action="store_true", help="with --table: each run's candidate as the current rule keeps it"
    )
    args, extra = parser.parse_known_args()
    extra = [flag for flag in extra if flag != "--"]
    if args.table:
        print(table(Path(args.table), args.rechoose))
        return
    if not SHARED.is_dir():
        sys.exit(f"benchmark_accuracy: no data at {SHARED} (the shared benchmark data, next to the repository)")
    names = [assay for name in args.data for assay in (proteingym_assays() if name == "proteingym" else [name])]
    runs_dir = Path(args.runs_dir)
    if args.jobs > 1:
        extra = ["--num-processes", "1", "--threads", "1", *extra]
    configurations = [(candidate, CANDIDATES[candidate]) for candidate in args.candidates]
    if args.tag or not configurations:
        configurations.append((args.tag or "defaults", []))
    plan = [
        (name, regime, rows or None, seed, tag, [*extra, *flags])
        for tag, flags in configurations
        for name in names
        for regime in regimes_of(name)
        if args.regimes is None or regime in args.regimes
        for rows in args.train_rows
        for seed in args.seeds
    ]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda entry: run(*entry[:5], runs_dir, args.budget_minutes, entry[5]), plan))
    text = table(runs_dir)
    (runs_dir / "accuracy.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
