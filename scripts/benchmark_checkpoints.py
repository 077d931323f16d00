"""What checkpoints cost a small data set's run: one lyra-train run on 494 training variants (8 optimizer steps an
epoch, so the floor of 2,000 steps makes 250 epochs), its wall time and the seconds spent writing checkpoints and
`best/` (the two functions wrapped with a timer), for the code at this checkout or at another one.

    python scripts/benchmark_checkpoints.py                                   # this checkout's lyra_hf
    git worktree add /tmp/before 4157366 && python scripts/benchmark_checkpoints.py --code /tmp/before

One process, one thread; run it with nothing else running. Data: ProteinGym's AMFR_HUMAN_Rocklin_2023_4G3O
(`../shared/data/proteingym`), fold 0 of fold_random_5 as the test split, the first 494 training rows.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ASSAY = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "proteingym" / "AMFR_HUMAN_Rocklin_2023_4G3O.csv"
)
RUNNER = """
import json, sys, time
import lyra_hf.training.loop as loop
from lyra_hf.train import main
spent = {"checkpoints": 0.0, "best": 0.0, "written": 0}
def timed(function, key):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - started
            spent["written"] += key == "checkpoints"
    return wrapper
loop.save_checkpoint = timed(loop.save_checkpoint, "checkpoints")
loop.save_best = timed(loop.save_best, "best")
code = main(sys.argv[2:])
json.dump(spent, open(sys.argv[1], "w"))
sys.exit(code)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", help="a checkout whose lyra_hf to run (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        flags = [
            "--train-file",
            str(ASSAY),
            "--sequence-column",
            "mutated_sequence",
            "--label-columns",
            "DMS_score",
            "--fold-column",
            "fold_random_5",
        ]
        flags += [
            "--test-fold",
            "0",
            "--max-train-samples",
            "494",
            "--site-effects",
            "off",
            "--global-epistasis",
            "off",
            "--num-processes",
            "1",
        ]
        flags += ["--threads", "1", "--quiet", "--output-dir", f"{folder}/run"]
        environment = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
        if args.code:
            environment["PYTHONPATH"] = str(Path(args.code).resolve())
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-c", RUNNER, f"{folder}/spent.json", *flags],
            capture_output=True,
            text=True,
            env=environment,
        )
        wall = time.perf_counter() - started
        if completed.returncode != 0:
            sys.exit(completed.stderr[-3000:])
        spent = json.loads(Path(f"{folder}/spent.json").read_text())
        results = json.loads(Path(f"{folder}/run/results.json").read_text())
    share = (spent["checkpoints"] + spent["best"]) / wall
    print(
        f"{args.code or 'this checkout'}: {results['steps']} steps in {len(results['history'])} epochs, wall "
        f"{wall:.1f} s; "
        f"{spent['written']} checkpoints {spent['checkpoints']:.1f} s + best/ {spent['best']:.1f} s = {share:.1%} of "
        "the wall time; "
        f"test spearmanr {results['test']['spearmanr']:.4f}"
    )


if __name__ == "__main__":
    main()
