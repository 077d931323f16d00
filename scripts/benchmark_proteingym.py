"""ProteinGym's supervised track, end to end: `lyra-train` on each assay of a folder with ProteinGym's three fold
schemes (every fold the test split once), without a prior and with each zero-shot scorer's scores as `--prior`,
beside the baselines each run fits and the published per-assay figures.

    python scripts/benchmark_proteingym.py                                    # ../shared/data/proteingym, all priors
    python scripts/benchmark_proteingym.py --assays DNJA1_HUMAN_Rocklin_2023_2LO1 --priors none ESM_IF1
    python scripts/benchmark_proteingym.py --table runs/proteingym            # the table of the finished runs

Each (assay, prior) is one lyra-train command (`--fold-column fold_random_5,fold_modulo_5,fold_contiguous_5`), its wall
time measured around it. The figures are the Spearman correlation of all out-of-fold predictions pooled, as the
leaderboard reports them; lyra-train's results.json also holds the per-fold mean. Published figures
(`published_spearman.csv`): ProteinGym's leaderboard and the Kermut paper, on the same folds.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "proteingym"
SCHEMES = ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")
PUBLISHED = (
    "One-Hot Encodings",
    "TranceptEVE + One-Hot Encodings",
    "ESM-1v Embeddings",
    "MSA Transformer Embeddings",
    "ProteinNPT",
    "Kermut",
)


def assays(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.csv") if path.stem != "published_spearman")


def run(folder: Path, assay: str, prior: str, runs_dir: Path, extra: list[str]) -> Path:
    output = runs_dir / assay / prior
    if (output / "results.json").exists():
        return output
    command = [
        sys.executable,
        "-m",
        "lyra_hf.train",
        "--train-file",
        str(folder / f"{assay}.csv"),
        "--sequence-column",
        "mutated_sequence",
    ]
    command += [
        "--label-columns",
        "DMS_score",
        "--fold-column",
        ",".join(SCHEMES),
        "--quiet",
        "--output-dir",
        str(output),
        "--overwrite-output-dir",
    ]
    if prior != "none":
        command += ["--prior", str(folder / "zero_shot" / prior / f"{assay}.csv")]
    started = time.time()
    completed = subprocess.run(
        [*command, *extra], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    if completed.returncode != 0:
        sys.exit(f"benchmark_proteingym: {assay} with prior {prior} failed:\n{completed.stderr[-3000:]}")
    (output / "wall_seconds.json").write_text(json.dumps({"wall_seconds": time.time() - started}))
    print(
        f"{assay}, prior {prior}: {time.time() - started:.0f} s; {completed.stdout.strip().splitlines()[-1]}",
        flush=True,
    )
    return output


def published(folder: Path) -> dict[tuple[str, str, str], float]:
    with open(folder / "published_spearman.csv", newline="") as handle:
        return {(row["scheme"], row["assay"], row["method"]): float(row["spearman"]) for row in csv.DictReader(handle)}


def pooled(entry: dict | None) -> str:
    value = (entry or {}).get("test_pooled", {}).get("spearmanr")
    return "-" if value is None else f"{value:.3f}"


def table(folder: Path, runs_dir: Path) -> str:
    figures = published(folder)
    header = [
        "assay",
        "scheme",
        "prior",
        "lyra-train",
        "one-hot ridge",
        "ridge + prior",
        "prior alone",
        "minutes",
        *PUBLISHED,
    ]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + " |"]
    for path in sorted(runs_dir.glob("*/*/results.json")):
        assay, prior = path.parts[-3], path.parts[-2]
        results = json.loads(path.read_text())
        minutes = (
            json.loads((path.parent / "wall_seconds.json").read_text())["wall_seconds"] / 60
            if (path.parent / "wall_seconds.json").exists()
            else None
        )
        for scheme in SCHEMES:
            entry = results["schemes"][scheme]
            baseline = entry.get("baseline") or {}
            cells = [
                assay,
                scheme,
                prior,
                pooled(entry),
                pooled(baseline),
                pooled(baseline.get("with_prior")),
                pooled(baseline.get("prior_alone")),
            ]
            cells.append(f"{minutes:.1f}" if minutes is not None and scheme == SCHEMES[0] else "")
            cells += [
                f"{figures[(scheme, assay, method)]:.3f}" if (scheme, assay, method) in figures else "-"
                for method in PUBLISHED
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        default=str(DATA),
        help="a folder of ProteinGym assays (and zero_shot/<scorer>/, published_spearman.csv)",
    )
    parser.add_argument("--assays", nargs="+", help="default: every assay of the folder")
    parser.add_argument(
        "--priors", nargs="+", default=["none", "ESM_IF1", "TranceptEVE_L"], help="none, or scorers of zero_shot/"
    )
    parser.add_argument("--runs-dir", default="runs/proteingym")
    parser.add_argument("--table", metavar="RUNS_DIR", help="only print the table of the runs in RUNS_DIR")
    args, extra = parser.parse_known_args()
    folder = Path(args.data)
    if args.table:
        print(table(folder, Path(args.table)))
        return
    if not folder.is_dir():
        sys.exit(f"benchmark_proteingym: no data at {folder}")
    for assay in args.assays or assays(folder):
        for prior in args.priors:
            run(folder, assay, prior, Path(args.runs_dir), [flag for flag in extra if flag != "--"])
    text = table(folder, Path(args.runs_dir))
    (Path(args.runs_dir) / "proteingym.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
