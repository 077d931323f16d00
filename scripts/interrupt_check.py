"""Ctrl-C at random moments in the first seconds of each command: every try must end with exit code 130 and one line
on stderr, `lyra-X: interrupted (SIGINT)...`, whether it came while Python imported the libraries or later.

    python scripts/interrupt_check.py --tries 20 --seconds 5        # BENCHMARKS.md, "Interrupts from the first instant"

Each command runs as the installed console script (`lyra-train` and so on, beside this Python), in a session of its
own, and gets SIGINT sent to its process group (as a terminal's Ctrl-C) after a uniformly random delay in [0,
--seconds). Inputs: a tiny saved model, a short wild type, a small alignment. Prints one row per command.
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def inputs(folder: Path) -> dict[str, list[str]]:
    """Each command's arguments, with its inputs made in `folder`."""
    import torch

    from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer

    tokenizer = LyraTokenizer(unknown="error")
    LyraForSequenceRegression(LyraConfig(hidden_size=16, state_size=8, vocab_size=len(tokenizer))).save_pretrained(
        folder / "model"
    )
    tokenizer.save_pretrained(folder / "model")
    (folder / "in.csv").write_text("sequence\n" + "MKTAYIAKQRQISFVKSHFSRQ\n" * 20000)
    (folder / "family.a2m").write_text(">q\nMKTAYIAKQR\n>h\nMKSAYIAKQR\n>h2\nMRTAYLAKQR\n")
    torch.manual_seed(0)
    model, wild_type = str(folder / "model"), "MKTAYIAKQRQISFVKSHFSRQ" * 10
    return {
        "lyra-train": ["--epochs", "50", "--output-dir", str(folder / "run"), "--overwrite-output-dir"],
        "lyra-predict": [
            "--model",
            model,
            "--input",
            str(folder / "in.csv"),
            "--output",
            str(folder / "out.csv"),
            "--overwrite",
        ],
        "lyra-scan": [
            "--model",
            model,
            "--sequence",
            wild_type,
            "--top-k",
            "20",
            "--output-dir",
            str(folder / "scan"),
            "--overwrite",
            "--no-figures",
        ],
        "lyra-design": [
            "--model",
            model,
            "--sequence",
            wild_type,
            "--positions",
            "1-40",
            "--max-mutations",
            "2",
            "--output-dir",
            str(folder / "design"),
            "--overwrite",
            "--no-figures",
        ],
        "lyra-prior": [
            "--alignment",
            str(folder / "family.a2m"),
            "--output",
            str(folder / "prior.csv"),
            "--overwrite",
            "--no-figures",
        ],
    }


def one_try(command: list[str], delay: float) -> tuple[int, list[str]]:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    time.sleep(delay)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, [line for line in stderr.splitlines() if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--commands", nargs="+", help="default: every command")
    args = parser.parse_args()
    bin_folder, generator = Path(sys.executable).parent, random.Random(0)
    print("| command | tries | exit 130, one line | finished before the signal | other |")
    print("| --- | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for name, arguments in inputs(Path(folder)).items():
            if args.commands and name not in args.commands:
                continue
            good, finished, other = 0, 0, []
            for _ in range(args.tries):
                code, lines = one_try([str(bin_folder / name), *arguments], generator.uniform(0, args.seconds))
                if code == 0:
                    finished += 1
                elif code == 130 and len(lines) == 1 and lines[0].startswith(f"{name}: interrupted (SIGINT)"):
                    good += 1
                else:
                    other.append(f"exit {code}: {' / '.join(lines)[-300:]}")
            print(f"| {name} | {args.tries} | {good} | {finished} | {'; '.join(other) or '-'} |", flush=True)


if __name__ == "__main__":
    main()
