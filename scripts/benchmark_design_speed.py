"""How long `lyra-design` takes, start-up included, to score every candidate of 4 positions x 20 letters (159,999
candidates) of a 265-residue protein and choose 96: a default-size model, and a seed ensemble of 3 of them (untrained
weights: the computation is the same as a trained model's).

    python scripts/benchmark_design_speed.py            # prints one line per model, wall-clock seconds of the command
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
from lyra_hf.outputs import write_json


LENGTH, POSITIONS = 265, "120-123"


def save_model(folder: Path, seed: int) -> None:
    torch.manual_seed(seed)
    tokenizer = LyraTokenizer()
    LyraForSequenceRegression(LyraConfig(vocab_size=len(tokenizer), id2label={0: "fitness"})).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def timed(model: Path, sequence: str, output: Path) -> float:
    command = [
        "lyra-design",
        "--model",
        str(model),
        "--sequence",
        sequence,
        "--positions",
        POSITIONS,
        "--max-mutations",
        "4",
        "--output-dir",
        str(output),
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode:
        sys.exit(completed.stderr)
    print(completed.stdout.strip(), file=sys.stderr)
    return seconds


def main():
    sequence = "".join(np.random.default_rng(0).choice(list("ACDEFGHIKLMNPQRSTVWY"), LENGTH))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        save_model(folder / "model", 0)
        for index in range(3):
            save_model(folder / "ensemble" / f"member_{index}", index)
        write_json(folder / "ensemble" / "ensemble.json", {"members": [f"member_{index}" for index in range(3)]})
        for name in ("model", "ensemble"):
            print(
                f"{name}: {timed(folder / name, sequence, folder / f'out-{name}'):.1f} s for 159,999 candidates and a "
                "batch of 96 (wall clock, start-up included)"
            )


if __name__ == "__main__":
    main()
