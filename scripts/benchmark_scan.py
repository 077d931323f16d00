"""`lyra-scan` speed on this machine: incremental against full-forward scoring, and complete double-mutant maps.

    python scripts/benchmark_scan.py --output results/scan.json

1. Scoring speed of double mutants (mutants/s, one process, one thread) at L = 56, 237 and 1,000 with the default
   model (and at 1,000 with two S4D layers): `lyra_hf.incremental` and full forward passes on the same batches (the
   all-pairs scan's: 19 x 19 letters of 8 random position pairs, in `lyra-scan`'s default CPU batches), alternately,
   best of 3 each.
2. `lyra-scan --all-pairs` of a random 56-letter and a random 237-letter wild type (every double mutant: 555,940 and
   10,095,726) on all usable CPUs: the command's wall time (about 10 s of it is importing torch and transformers) and
   the peak memory of its process tree (PSS, sampled once a second; see benchmark_cpu.py).

The model is the default Lyra with random weights (seed 0): speed does not depend on the weights. Run it with nothing
else running.
"""

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_cpu import run


LETTERS = "ACDEFGHIKLMNPQRSTVWY"
SPEED_PAIRS = 8


def default_model(**config):
    from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer

    torch.manual_seed(0)
    tokenizer = LyraTokenizer()
    return LyraForSequenceRegression(LyraConfig(vocab_size=len(tokenizer), **config)).eval(), tokenizer


def random_wild_type(length: int, seed: int = 0) -> str:
    return "".join(np.random.default_rng(seed).choice(list(LETTERS), length))


def scoring_speed(lengths: list[int], repeats: int = 3) -> dict:
    """Mutants/s of the two scorers on the same groups of double mutants; the last length also with two S4D layers
    (the incremental path is exact for the first and runs the second in full)."""
    from lyra_hf.scan import auto_batch_size, score_group, scoring_state, site_groups

    torch.set_num_threads(1)
    results = {}
    for length, layers in [(length, 1) for length in lengths] + [(lengths[-1], 2)]:
        model, tokenizer = default_model(num_s4d_layers=layers)
        label = str(length) if layers == 1 else f"{length}, 2 S4D layers"
        wild_ids = torch.tensor(tokenizer(random_wild_type(length))["input_ids"])
        mask = torch.ones(length, dtype=torch.long)
        incremental = scoring_state([model], wild_ids, mask, torch.device("cpu"), None)
        full = {**incremental, "scorers": [None]}
        rng = np.random.default_rng(length)
        # Position pairs drawn uniformly: a causal model's mutants cost less the later their second position.
        sites = np.sort(np.stack([rng.choice(length, 2, replace=False) for _ in range(SPEED_PAIRS)]), axis=1)
        letter_ids = np.array(tokenizer.convert_tokens_to_ids(list(LETTERS)))
        tokens = np.stack(
            [np.stack(np.meshgrid(letter_ids[:19], letter_ids[1:], indexing="ij"), -1).reshape(-1, 2)] * len(sites)
        )
        mutants = tokens.shape[0] * tokens.shape[1]
        best = {}
        for _ in range(repeats):
            for name, state in (("incremental", incremental), ("full forward", full)):
                # Each with lyra-scan's default batch on a CPU.
                groups = list(
                    site_groups(
                        sites,
                        tokens,
                        auto_batch_size(model, length, torch.device("cpu"), incremental=name == "incremental"),
                    )
                )
                score_group(state, groups[0])  # warm-up: the first batch allocates
                started = time.perf_counter()
                for group in groups:
                    score_group(state, group)
                best[name] = max(best.get(name, 0.0), mutants / (time.perf_counter() - started))
        results[label] = {**best, "ratio": best["incremental"] / best["full forward"], "mutants": mutants}
        print(
            f"L = {label}: incremental {best['incremental']:,.0f} mutants/s, full forward {best['full forward']:,.0f}: "
            f"{results[label]['ratio']:.2f}x",
            flush=True,
        )
    return results


def all_pairs(lengths: list[int], work: Path) -> dict:
    model, tokenizer = default_model()
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    results = {}
    for length in lengths:
        mutants = math.comb(length, 2) * 19**2
        command = [
            sys.executable,
            "-m",
            "lyra_hf.scan",
            "--model",
            str(work / "model"),
            "--sequence",
            random_wild_type(length),
            "--all-pairs",
            "--max-mutants",
            str(mutants),
            "--output-dir",
            str(work / f"all_pairs_{length}"),
        ]
        entry = run(command, f"all pairs, L = {length}", sample_memory=True)
        entry["mutants"] = mutants
        entry["mutants_per_second"] = mutants / entry["seconds"]
        entry["parquet_bytes"] = (work / f"all_pairs_{length}" / "pairs.parquet").stat().st_size
        results[length] = entry
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/scan.json")
    parser.add_argument("--parts", default="speed,all-pairs")
    parser.add_argument("--speed-lengths", default="56,237,1000")
    parser.add_argument("--all-pairs-lengths", default="56,237")
    args = parser.parse_args()
    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads by default; {platform.platform()}",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": " ".join(sys.argv),
    }
    parts = args.parts.split(",")
    if "speed" in parts:
        results["scoring"] = scoring_speed([int(length) for length in args.speed_lengths.split(",")])
    if "all-pairs" in parts:
        with tempfile.TemporaryDirectory() as work:
            results["all_pairs"] = all_pairs([int(length) for length in args.all_pairs_lengths.split(",")], Path(work))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
