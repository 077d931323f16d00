"""Simulated design rounds on the synthetic landscape (`lyra_hf.data.synthetic_landscape`): does lyra-design find fitter
variants than choosing at random or by one-hot ridge?

Per seed (the landscape's and the first sample's): 384 random variants are measured (true fitness plus the landscape's
noise). Each round, every strategy proposes 96 new variants, reads their true fitness, and adds their measurements to
what it has measured; three rounds. Strategies:

- random: 96 random variants (1 + Poisson(2) substitutions, as the first sample);
- ridge: the top 96 of the design space by a one-hot ridge regression fitted on the measured variants (its alpha by
  leave-one-out cross-validation over the baseline's grid);
- lyra-mean, lyra-ucb, lyra-thompson: `lyra-train --ensemble 3` on the measured variants, then `design()` over the same
  space, ranking by the members' mean, by mean + 1 std (ucb:1), or by Thompson sampling. Round 1's ensemble is
  shared by the three (they have measured the same variants so far).

The design space: every single and double mutant of the wild type (30 positions, 157,605 candidates), scored
exhaustively. Per round the table gives, as the median over seeds, the best true fitness among the variants the
strategy has proposed so far and the mean true fitness of the round's batch; its first line gives the ceilings: the
best variant of the design space and the mean of its best 96.

    python scripts/benchmark_design.py --seeds 0 1 2 3 4 5 6 7 8 9 --runs-dir runs/design_sim
    python scripts/benchmark_design.py --table runs/design_sim

`--ensemble-validation rotate` trains the ensembles with that lyra-train option (each member validates on its own
tenth of the measured variants, lyra-train's default since issue 30's sixth session; this script's default stays
`shared`, the protocol of the tables made before); `--rounds 1` stops after the first round; `--strategies` runs some
of them (the
table shows those every seed ran).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lyra_hf import LyraTokenizer
from lyra_hf.baseline import RIDGE_ALPHAS
from lyra_hf.checkpoints import load_models
from lyra_hf.data.synthetic import CANONICAL, NOISE, synthetic_landscape
from lyra_hf.design import DesignOptions, design
from lyra_hf.design.scoring import enumerate_space
from lyra_hf.design.space import build_space
from lyra_hf.outputs import write_csv, write_json
from lyra_hf.scan.mutants import WildType


START, BATCH = 384, 96
STRATEGIES = ("random", "ridge", "lyra-mean", "lyra-ucb", "lyra-thompson")
ACQUISITION = {"lyra-mean": "mean", "lyra-ucb": "ucb:1", "lyra-thompson": "thompson"}


class Lab:
    """One seed's landscape, its measurements and its noise."""

    def __init__(self, seed: int):
        self.seed, self.landscape = seed, synthetic_landscape(seed=seed)
        self.rng = np.random.default_rng(seed + 10_000)

    def sequences(self, variants: np.ndarray) -> list[str]:
        return ["".join(CANONICAL[index] for index in variant) for variant in variants]

    def measure(self, sequences: list[str]) -> list[float]:
        return (self.landscape.fitness(sequences) + self.rng.normal(0.0, NOISE, len(sequences))).tolist()


def one_hot(lab: Lab, sequences: list[str]) -> np.ndarray:
    encoded = lab.landscape.encode(sequences)
    features = np.zeros((len(sequences), encoded.shape[1] * len(CANONICAL)))
    features[np.arange(len(sequences))[:, None], np.arange(encoded.shape[1]) * len(CANONICAL) + encoded] = 1.0
    return features


def ridge_batch(lab: Lab, measured: dict[str, float], space_sequences: list[str]) -> list[str]:
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit(one_hot(lab, list(measured)), list(measured.values()))
    weights = model.coef_.reshape(len(lab.landscape.wild_type), len(CANONICAL))
    encoded = lab.landscape.encode(space_sequences)
    scores = weights[np.arange(encoded.shape[1]), encoded].sum(1)
    ranked = [space_sequences[index] for index in np.argsort(-scores, kind="stable")]
    return [sequence for sequence in ranked if sequence not in measured][:BATCH]


def train_ensemble(measured: dict[str, float], folder: Path, seed: int, ensemble_validation: str) -> Path:
    if not (folder / "results.json").exists():
        write_csv(folder.with_suffix(".csv"), {"sequence": list(measured), "fitness": list(measured.values())})
        command = [
            sys.executable,
            "-m",
            "lyra_hf.train",
            "--train-file",
            str(folder.with_suffix(".csv")),
            "--label-columns",
            "fitness",
        ]
        command += ["--ensemble", "3", "--ensemble-validation", ensemble_validation, "--seed", str(seed)]
        command += ["--quiet", "--overwrite-output-dir", "--output-dir", str(folder)]
        completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if completed.returncode:
            sys.exit(f"benchmark_design: training {folder} failed:\n{completed.stderr[-3000:]}")
    return folder / "best"


def lyra_batch(lab: Lab, measured: dict[str, float], model_dir: Path, acquisition: str) -> list[str]:
    tokenizer, members = load_models(str(model_dir))
    options = DesignOptions(max_mutations=2, num_designs=BATCH, acquisition=acquisition, seed=lab.seed)
    result = design(
        members,
        tokenizer,
        lab.landscape.wild_type_sequence,
        options,
        measured=list(measured),
        processes=2,
        progress=False,
    )
    return list(result.designs["sequence"])


def space_of(lab: Lab) -> list[str]:
    """Every single and double mutant of the landscape's wild type, as sequences."""
    space = build_space(WildType.encode(LyraTokenizer(), lab.landscape.wild_type_sequence), None, None, 2)
    return [space.sequence(mutations) for mutations in enumerate_space(space)]


def run_seed(seed: int, runs_dir: Path, num_rounds: int, ensemble_validation: str, strategies: list[str]) -> dict:
    """Every strategy's rounds on one seed: per round, the best true fitness measured so far and the batch's mean."""
    path = runs_dir / f"seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    lab = Lab(seed)
    start = lab.sequences(lab.landscape.random_variants(np.random.default_rng(seed), START))
    first = dict(zip(start, lab.measure(start)))
    space_sequences = space_of(lab)
    record = {
        "seed": seed,
        "start_best": float(lab.landscape.fitness(start).max()),
        "ensemble_validation": ensemble_validation,
    }
    for strategy in strategies:
        measured, rounds, started = dict(first), [], time.time()
        for round_ in range(1, num_rounds + 1):
            if strategy == "random":
                excluded = {tuple(variant) for variant in lab.landscape.encode(list(measured))}
                batch = lab.sequences(lab.landscape.random_variants(lab.rng, BATCH, excluded))
            elif strategy == "ridge":
                batch = ridge_batch(lab, measured, space_sequences)
            else:
                shared = "lyra" if round_ == 1 else strategy  # round 1's ensemble: the same measured variants for all
                model_dir = train_ensemble(
                    measured, runs_dir / f"seed{seed}-{shared}-round{round_}", seed, ensemble_validation
                )
                batch = lyra_batch(lab, measured, model_dir, ACQUISITION[strategy])
            truth = lab.landscape.fitness(batch)
            measured.update(zip(batch, lab.measure(batch)))
            best = float(lab.landscape.fitness(list(measured)).max())
            rounds.append(
                {
                    "round": round_,
                    "best_so_far": best,
                    "batch_mean": float(truth.mean()),
                    "batch_best": float(truth.max()),
                }
            )
        record[strategy] = {"rounds": rounds, "seconds": time.time() - started}
        print(
            f"seed {seed} {strategy}: "
            + ", ".join(
                f"round {entry['round']} best {entry['best_so_far']:.2f} mean {entry['batch_mean']:.2f}"
                for entry in rounds
            ),
            flush=True,
        )
    write_json(path, record)
    return record


def best_found(record: dict, strategy: str, round_: int) -> float:
    """The best true fitness among the variants a strategy proposed in rounds 1 to `round_` (1-based)."""
    return max(entry["batch_best"] for entry in record[strategy]["rounds"][:round_])


def table(runs_dir: Path) -> str:
    """Per strategy and round, the medians over seeds of the best true fitness found so far (among the strategy's own
    proposals) and of the round's batch mean; and per strategy, in how many seeds it had proposed a variant as
    fit as the space's best by each round (random variants may hold more than two substitutions)."""
    records = [json.loads(path.read_text()) for path in sorted(runs_dir.glob("seed*.json"))]
    rounds = min(len(record["random"]["rounds"]) for record in records)
    start = statistics.median(record["start_best"] for record in records)
    ceilings = [
        np.sort(lab.landscape.fitness(space_of(lab)))[::-1] for lab in (Lab(record["seed"]) for record in records)
    ]
    optimum, top_mean = (
        statistics.median(float(ceiling[0]) for ceiling in ceilings),
        statistics.median(float(ceiling[:BATCH].mean()) for ceiling in ceilings),
    )
    lines = [
        f"{len(records)} seeds; medians over seeds of the best of the first {START} random variants, {start:.2f}; the "
        f"best in the design space, {optimum:.2f}; the mean of its best {BATCH}, {top_mean:.2f}",
        "",
    ]
    lines += [
        "| strategy | "
        + " | ".join(f"round {r}: best found | round {r}: batch mean" for r in range(1, rounds + 1))
        + " | seeds reaching the space's best, by round |"
    ]
    lines += ["| --- |" + " ---: | ---: |" * rounds + " ---: |"]
    for strategy in (strategy for strategy in STRATEGIES if all(strategy in record for record in records)):
        cells = []
        for round_ in range(1, rounds + 1):
            cells.append(f"{statistics.median(best_found(record, strategy, round_) for record in records):.2f}")
            cells.append(
                f"{statistics.median(record[strategy]['rounds'][round_ - 1]['batch_mean'] for record in records):.2f}"
            )
        optimal = [
            sum(best_found(record, strategy, round_) >= ceiling[0] - 1e-9 for record, ceiling in zip(records, ceilings))
            for round_ in range(1, rounds + 1)
        ]
        lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {' / '.join(map(str, optimal))} of {len(records)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--runs-dir", default="runs/design_sim")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--ensemble-validation", choices=("shared", "rotate"), default="shared", help="lyra-train's, for the ensembles"
    )
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--table", metavar="RUNS_DIR", help="print the table of the finished seeds in RUNS_DIR")
    args = parser.parse_args()
    if args.table:
        print(table(Path(args.table)))
        return
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        run_seed(seed, runs_dir, args.rounds, args.ensemble_validation, args.strategies)
    print(table(runs_dir))


if __name__ == "__main__":
    main()
