"""Which linear fit a small regression library's model starts from (`lyra_hf.baseline.fit_start`), and whether the
choice is right: one-hot ridge or ridge with shared substitution effects, each at its best alpha, by exact
leave-one-out on the training rows, against the choice validation would make (a tenth carved from the rows, as
lyra-train carves it).

Libraries: the first 384 random variants of each seed's synthetic landscape (`scripts/benchmark_design.py`'s start),
where the true fitness says which fit is better (the mean true fitness of each fit's top 96 single and double
mutants, as that benchmark's ridge strategy picks them); and GFP subsampled to 384 and 2,000 training rows (the
files of `scripts/benchmark_accuracy.py`), where the test split does (each fit's test Spearman, for this table only:
no choice reads it).

    python scripts/benchmark_start.py --seeds 0 1 2 3 4 5 6 7 8 9
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark_accuracy import SHARED, subset
from benchmark_design import START, Lab

from lyra_hf import LyraTokenizer
from lyra_hf.baseline import fit_baseline, leave_one_out_error
from lyra_hf.data import load_sequence_dataset
from lyra_hf.data.synthetic import CANONICAL
from lyra_hf.design.scoring import enumerate_space
from lyra_hf.design.space import build_space
from lyra_hf.outputs import write_csv
from lyra_hf.scan.mutants import WildType
from lyra_hf.tasks import TASKS


FITS = {"one-hot": False, "shared": True}


def fits(dataset, seed: int) -> dict[str, dict]:
    """Per fit: its leave-one-out error and alpha, and the fitted baseline (alpha chosen on validation)."""
    task, letters = TASKS["regression"], LyraTokenizer().letters
    entries = {}
    for name, shared in FITS.items():
        error, alpha = leave_one_out_error(task, dataset, letters, seed, shared)
        validated = fit_baseline(task, dataset, letters, ["label"], "spearmanr", seed, shared_substitutions=shared)
        at_alpha = fit_baseline(
            task, dataset, letters, ["label"], "spearmanr", seed, shared_substitutions=shared, strengths=(alpha,)
        )
        entries[name] = {
            "loo": error,
            "alpha": alpha,
            "validation": validated.record["validation"]["spearmanr"],
            "fit": at_alpha,
        }
    return entries


def top_batch_fitness(lab: Lab, fit, space_sequences: list[str], encoded: np.ndarray) -> float:
    """The mean true fitness of the 96 single and double mutants a fit ranks highest."""
    letters = LyraTokenizer().letters
    weights = fit.site_coefficients.reshape(fit.width, len(letters))[:, [letters.index(letter) for letter in CANONICAL]]
    scores = weights[np.arange(encoded.shape[1]), encoded].sum(1)
    return float(lab.landscape.fitness(encoded[np.argsort(-scores, kind="stable")[:96]]).mean())


def synthetic_rows(seed: int, folder: Path) -> str:
    lab = Lab(seed)
    start = lab.sequences(lab.landscape.random_variants(np.random.default_rng(seed), START))
    path = folder / f"synthetic-{seed}.csv"
    write_csv(path, {"sequence": start, "label": lab.measure(start)})
    dataset = load_sequence_dataset(path, alphabet=LyraTokenizer().letters, seed=seed)
    space = build_space(WildType.encode(LyraTokenizer(), lab.landscape.wild_type_sequence), None, None, 2)
    space_sequences = [space.sequence(mutations) for mutations in enumerate_space(space)]
    encoded = lab.landscape.encode(space_sequences)
    entries = fits(dataset, seed)
    truth = {name: top_batch_fitness(lab, entry["fit"], space_sequences, encoded) for name, entry in entries.items()}
    return row(f"synthetic seed {seed}", entries, truth, "top-96 true fitness")


def gfp_rows(rows: int, seed: int, folder: Path) -> str:
    dataset = load_sequence_dataset(subset("gfp", rows, seed, folder), test_file=SHARED / "gfp" / "test.csv", seed=seed)
    entries = fits(dataset, seed)
    truth = {name: entry["fit"].record["test"]["spearmanr"] for name, entry in entries.items()}
    return row(f"GFP {rows:,} seed {seed}", entries, truth, "test Spearman")


def row(library: str, entries: dict, truth: dict, judged_by: str) -> str:
    by_loo = min(entries, key=lambda name: entries[name]["loo"])
    by_validation = max(entries, key=lambda name: entries[name]["validation"])
    better = max(truth, key=truth.get)
    cells = [f"{entries[name]['loo']:.3f} (alpha {entries[name]['alpha']:g})" for name in FITS]
    cells += [f"{entries[name]['validation']:.3f}" for name in FITS]
    cells += [f"{truth[name]:.3f}" for name in FITS]
    marks = [
        f"{by_loo}{' (right)' if by_loo == better else ' (wrong)'}",
        f"{by_validation}{' (right)' if by_validation == better else ' (wrong)'}",
    ]
    return f"| {library} | {' | '.join(cells)} | {judged_by} | {' | '.join(marks)} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="synthetic landscapes")
    parser.add_argument("--gfp-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--gfp-rows", type=int, nargs="+", default=[384, 2000])
    args = parser.parse_args()
    header = (
        "| library | leave-one-out MSE: one-hot | shared | validation Spearman: one-hot | shared | truth: one-hot "
        "| shared | truth is | leave-one-out picks | validation picks |"
    )
    print(header, "| --- |" + " ---: |" * 6 + " --- | --- | --- |", sep="\n", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            print(synthetic_rows(seed, Path(folder)), flush=True)
        for rows in args.gfp_rows:
            for seed in args.gfp_seeds:
                print(gfp_rows(rows, seed, Path(folder)), flush=True)


if __name__ == "__main__":
    main()
