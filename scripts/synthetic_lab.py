"""A simulated lab on lyra-train's synthetic fitness landscape (`lyra_hf.data.synthetic_landscape`), for trying design
rounds without an assay: it tells the wild type, samples random measured variants, and measures a batch of designs
(the landscape's true fitness plus the data set's measurement noise).

    python scripts/synthetic_lab.py wild-type                               # the wild type (landscape seed 0)
    python scripts/synthetic_lab.py sample 384 measured.csv                 # 384 random variants, measured
    python scripts/synthetic_lab.py measure design1/designs.csv measured.csv   # add a plate's measurements

Files are CSV with columns `sequence` and `fitness`; `measure` appends to the measured file (atomically) the rows it
has not measured before.
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lyra_hf.data.synthetic import CANONICAL, NOISE, synthetic_landscape
from lyra_hf.outputs import write_csv


def read_sequences(path: str) -> list[str]:
    with open(path, newline="") as handle:
        return [row["sequence"] for row in csv.DictReader(handle)]


def measured_rows(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        return {row["sequence"]: row["fitness"] for row in csv.DictReader(handle)}


def measure(sequences: list[str], seed: int, noise_seed: int) -> list[float]:
    """True fitness plus measurement noise (seeded by `noise_seed`)."""
    landscape = synthetic_landscape(seed=seed)
    return (
        landscape.fitness(sequences) + np.random.default_rng(noise_seed).normal(0.0, NOISE, len(sequences))
    ).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--landscape-seed", type=int, default=0)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("wild-type")
    sample = commands.add_parser("sample")
    sample.add_argument("count", type=int)
    sample.add_argument("output")
    sample.add_argument("--seed", type=int, default=0)
    plate = commands.add_parser("measure")
    plate.add_argument("designs")
    plate.add_argument("measured")
    args = parser.parse_args()
    landscape = synthetic_landscape(seed=args.landscape_seed)
    if args.command == "wild-type":
        print(landscape.wild_type_sequence)
    elif args.command == "sample":
        variants = landscape.random_variants(np.random.default_rng(args.seed + 1_000), args.count)
        sequences = ["".join(CANONICAL[index] for index in variant) for variant in variants]
        write_csv(args.output, {"sequence": sequences, "fitness": measure(sequences, args.landscape_seed, args.seed)})
    else:
        measured = measured_rows(Path(args.measured))
        new = [sequence for sequence in dict.fromkeys(read_sequences(args.designs)) if sequence not in measured]
        values = measure(new, args.landscape_seed, len(measured))
        rows = {**measured, **dict(zip(new, map(str, values)))}
        write_csv(args.measured, {"sequence": list(rows), "fitness": list(rows.values())})
        print(f"measured {len(new)} new variants; {args.measured} holds {len(rows)}", file=sys.stderr)


if __name__ == "__main__":
    main()
