"""The gap between lyra-design's beam search and an exhaustive search of the same space: the batch each chooses
(96 designs by default) under a trained model, compared by the objective's mean and best over the batch and by how
many designs the two batches share.

    python scripts/benchmark_design_search.py --model runs/accuracy/gfp-all-seed0-shared-ge/best \\
        --wild-type-from ../shared/data/gfp/train.csv --positions 60-69 --max-mutations 3

`--wild-type-from` takes a variant library's CSV and uses its parent (each position's most frequent letter) as the
wild type. Both searches run in this process, one after the other, one worker process each; the seconds are wall
clock (nothing else should run beside it when they are to be quoted).
"""

import argparse
import csv
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lyra_hf.checkpoints import load_models
from lyra_hf.design import DesignOptions, design


def library_parent(path: str, column: str) -> str:
    """Each position's most frequent letter over a library of one length."""
    with open(path, newline="") as handle:
        sequences = [row[column] for row in csv.DictReader(handle)]
    return "".join(Counter(letters).most_common(1)[0][0] for letters in zip(*sequences))


def batch_summary(result) -> dict:
    objective = np.asarray(result.designs["objective"], dtype=float)
    return {
        "mean": objective.mean(),
        "best": objective.max(),
        "worst": objective.min(),
        "sequences": set(result.designs["sequence"]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--wild-type-from", required=True)
    parser.add_argument("--sequence-column", default="sequence")
    parser.add_argument("--positions", required=True)
    parser.add_argument("--max-mutations", type=int, default=3)
    parser.add_argument("--num-designs", type=int, default=96)
    args = parser.parse_args()
    tokenizer, models = load_models(args.model)
    wild_type = library_parent(args.wild_type_from, args.sequence_column)
    summaries = {}
    for search in ("exhaustive", "beam"):
        options = DesignOptions(
            positions=args.positions,
            max_mutations=args.max_mutations,
            num_designs=args.num_designs,
            search=search,
            max_candidates=10**8,
        )
        started = time.perf_counter()
        result = design(models, tokenizer, wild_type, options, progress=False)
        summaries[search] = {
            **batch_summary(result),
            "scored": len(result.candidates["sequence"]),
            "seconds": time.perf_counter() - started,
            "space": result.space_size,
        }
    exhaustive = summaries["exhaustive"]
    print(
        f"space: {exhaustive['space']:,} candidates (positions {args.positions}, up to {args.max_mutations} "
        f"mutations), {args.num_designs} designs"
    )
    print(
        "| search | candidates scored | seconds | batch mean objective | best | worst | designs shared with exhaustive "
        "|"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, summary in summaries.items():
        shared = len(summary["sequences"] & exhaustive["sequences"])
        print(
            f"| {name} | {summary['scored']:,} | {summary['seconds']:.1f} | {summary['mean']:.4f} | "
            f"{summary['best']:.4f} | {summary['worst']:.4f} | {shared} |"
        )


if __name__ == "__main__":
    main()
