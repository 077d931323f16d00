"""Mutational scanning: score every single mutant and chosen double mutants of a wild type, with epistasis.

    lyra-scan --model runs/fitness/best --sequence MKTAYIAKQR... --pairs 10-20,45 --output-dir scan/

Singles: every position x every other residue letter of the checkpoint's alphabet (not X, nor N of DNA and RNA: they
stand for an unknown residue), `delta = score - score(wild type)`. Pairs:
all substitution pairs at chosen positions, `epistasis = f(ab) - f(a) - f(b) + f(wt)`; with `--all-pairs`, every pair
of positions, streamed to Parquet (`write_pair_map`). Mutants are scored exactly and incrementally from the wild type's
cached activations (`lyra_hf.incremental`), grouped by the positions they change; models the shortcut does not cover
get full forward passes of token ids built directly (no string round trip). Regression checkpoints give one score per
target; classifiers give
the probability of one class (`target`). Positions are 1-based everywhere. A seed ensemble (`lyra-train --ensemble`)
gives the members' mean of every score, delta and epistasis, and their standard deviation in a `_std` column beside
each (NumPy's, ddof 0, over members, each member's delta taken from its own wild-type score); `--heatmap std` draws
the standard deviation of the single-mutant deltas instead of their mean.

Each wild type's tables and figures go to one folder (`--output-dir`, or a subfolder per FASTA record named after its
ID), replacing an earlier scan's files there only with `--overwrite`, and only once the new ones are complete.
"""

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch

from .. import cli
from ..checkpoints import load_models
from ..cpu import configure_threads, cpu_batch_tokens, plan_processes
from ..data import read_table
from ..outputs import locked_output_dir, refuse_earlier_outputs, replacing_outputs, write_csv
from .figures import plot
from .mutants import ScanResult, parse_positions, scan
from .pairs import DEFAULT_MAX_MUTANTS, SUMMARY_NAMES
from .scoring import check_model, encode_wild_type, mutant_letters, target_columns


SCAN_OUTPUTS = (
    "singles.csv",
    "pairs.csv",
    "singles_heatmap.png",
    "positions.png",
    "epistasis.png",
    "pairs.parquet",
    "pair_summary.csv",
    "pair_summary.png",
)
# Characters a FASTA ID keeps in its folder name; the others (path separators among them) become "_".
UNSAFE_IN_FOLDER_NAME = re.compile(r"[^A-Za-z0-9._+-]")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="lyra-scan", description=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint or seed-ensemble directory, or Hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", help="the wild-type sequence")
    source.add_argument("--fasta", help="a FASTA file of wild types (one output folder per record)")
    parser.add_argument(
        "--output-dir", required=True, help="folder for the tables and figures (one subfolder per FASTA record)"
    )
    parser.add_argument("--pairs", help="positions for the double-mutant scan, e.g. 10-20,45,47 (1-based)")
    parser.add_argument(
        "--top-k",
        type=cli.bounded(int, minimum=2),
        help="double-mutant scan over the K positions with the largest single effect",
    )
    parser.add_argument(
        "--all-pairs",
        action="store_true",
        help="every double mutant over every pair of positions (or of --pairs), to pairs.parquet, with a position x "
        "position summary",
    )
    parser.add_argument(
        "--max-mutants",
        type=cli.POSITIVE_INT,
        help="--all-pairs refuses to score more double mutants than this, naming the count and the time it would take "
        f"(default {DEFAULT_MAX_MUTANTS:,})",
    )
    parser.add_argument(
        "--target", help="class (name or index) whose probability a classifier scores; default: the last"
    )
    parser.add_argument(
        "--batch-size",
        type=cli.POSITIVE_INT,
        help=f"default: about {cpu_batch_tokens(64):,} tokens a batch on a CPU (at width 64; fewer for wider models), "
        "a quarter of free memory on a GPU",
    )
    parser.add_argument(
        "--device", type=cli.device, default="cuda" if torch.cuda.is_available() else "cpu", help="where the model runs"
    )
    parser.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only (no matplotlib needed)")
    parser.add_argument(
        "--heatmap",
        choices=("delta", "std"),
        default="delta",
        help="what the single-mutant heatmap shows: the delta, or (ensembles) its standard deviation over members",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier scan in the output folders"
    )
    cli.add_cpu_flags(parser)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.pairs and args.top_k:
        parser.error("give --pairs or --top-k, not both")
    if args.all_pairs and args.top_k:
        parser.error("--all-pairs scans every pair of positions (or of --pairs); --top-k does not apply")
    if args.max_mutants is not None and not args.all_pairs:
        parser.error(f"--max-mutants {args.max_mutants} limits --all-pairs; give --all-pairs or drop it")
    return args


def record_folders(ids: list[str]) -> list[str]:
    """One safe folder name per FASTA record ID: characters outside letters, digits and `._+-` (path separators among
    them) become `_`, and a leading dot too, so no name leaves the output folder or hides in it. Two IDs that would
    share a folder are refused, naming both."""
    folders, first_record = [], {}
    for record, identifier in enumerate(ids, 1):
        if not identifier:
            raise ValueError(f"FASTA record {record} has no ID to name its output folder after.")
        folder = UNSAFE_IN_FOLDER_NAME.sub("_", identifier)
        folder = "_" + folder[1:] if folder.startswith(".") else folder
        if folder in first_record:
            earlier = first_record[folder]
            raise ValueError(
                f"FASTA records {earlier} ({ids[earlier - 1]!r}) and {record} ({identifier!r}) would share the output "
                f"folder {folder!r}; give them distinct IDs."
            )
        first_record[folder] = record
        folders.append(folder)
    return folders


def write_tables(result: ScanResult, folder: Path, letters: str, figures: bool, heatmap: str = "delta") -> None:
    """Write the tables (and figures) of a scan into `folder` (an all-pairs scan's Parquet file is there already)."""
    write_csv(folder / "singles.csv", result.singles.to_dict())
    if result.pairs is not None:
        write_csv(folder / "pairs.csv", result.pairs.to_dict())
    if result.pair_summary is not None:
        rows = np.argwhere(np.triu(~np.isnan(result.pair_summary["max_abs_epistasis"]), 1))
        columns = {"position_a": rows[:, 0] + 1, "wild_type_a": [result.sequence[a] for a in rows[:, 0]]}
        columns.update({"position_b": rows[:, 1] + 1, "wild_type_b": [result.sequence[b] for b in rows[:, 1]]})
        columns.update({name: result.pair_summary[name][rows[:, 0], rows[:, 1]] for name in SUMMARY_NAMES})
        write_csv(folder / "pair_summary.csv", {name: list(values) for name, values in columns.items()})
    if figures:
        plot(result, folder, letters, heatmap)


def wild_types(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(output subfolder, sequence) of `--sequence`, or of each `--fasta` record."""
    if not args.fasta:
        return [("", args.sequence)]
    records = read_table(args.fasta, fasta=True)
    return list(zip(record_folders(records["id"]), records["sequence"]))


def scan_jobs(
    args: argparse.Namespace, sequences: list[tuple[str, str]], tokenizer, models
) -> list[tuple[str, str, list[int] | None]]:
    """Each wild type's output folder, sequence and pair positions, every one checked (and its folder free of an
    earlier scan, unless --overwrite) before the first is scanned."""
    check_model(models[0])
    target_columns(models[0], args.target)
    if args.heatmap == "std" and len(models) == 1:
        raise ValueError(f"--heatmap std shows the spread over an ensemble's members; {args.model} is a single model.")
    jobs = []
    for folder, sequence in sequences:
        where = f"record {folder!r}: " if folder else ""
        try:
            sequence = encode_wild_type(tokenizer, sequence, models[0].config)[0]
            pairs = parse_positions(args.pairs, len(sequence)) if args.pairs else None
        except ValueError as error:
            raise ValueError(f"{where}{error}") from None
        if not args.overwrite:
            previous = [name for name in SCAN_OUTPUTS if (Path(args.output_dir) / folder / name).exists()]
            refuse_earlier_outputs(
                str(Path(args.output_dir) / folder), previous, "an earlier scan", "--overwrite to replace it"
            )
        jobs.append((folder, sequence, pairs))
    return jobs


def run(args: argparse.Namespace) -> None:
    """Check every wild type, flag and output folder first, then scan and write each in turn."""
    output_dir = Path(args.output_dir)
    sequences = wild_types(args)
    with locked_output_dir(output_dir):
        tokenizer, models = load_models(args.model, args.revision)
        jobs = scan_jobs(args, sequences, tokenizer, models)
        processes, threads = (
            plan_processes(args.num_processes, args.threads) if args.device == "cpu" else (1, args.threads)
        )
        configure_threads(threads)
        figures = cli.figures_wanted(args, "lyra-scan")
        for folder, sequence, pairs in jobs:
            started = time.perf_counter()
            # Everything is written into a temporary folder and moved into place once complete: an interrupted scan
            # (an all-pairs one included) leaves no partial output, and an earlier scan's files stay until then.
            with replacing_outputs(output_dir / folder, SCAN_OUTPUTS) as (temporary, written):
                result = scan(
                    models,
                    tokenizer,
                    sequence,
                    pairs=pairs,
                    top_k=args.top_k,
                    target=args.target,
                    batch_size=args.batch_size,
                    device=args.device,
                    processes=processes,
                    all_pairs=temporary / "pairs.parquet" if args.all_pairs else None,
                    max_mutants=args.max_mutants,
                )
                write_tables(result, temporary, mutant_letters(tokenizer), figures, args.heatmap)
            doubles = len(result.pairs) if result.pairs is not None else 0
            if result.pairs_file is not None:
                import pyarrow.parquet as pq

                doubles = pq.ParquetFile(output_dir / folder / "pairs.parquet").metadata.num_rows
            seconds = time.perf_counter() - started
            mutants = len(result.singles) + doubles
            print(
                f"lyra-scan: {folder or 'sequence'}: {len(result.singles):,} single and {doubles:,} double mutants in "
                f"{seconds:.1f} s "
                f"({mutants / seconds:,.0f} mutants/s) -> {', '.join(map(str, written))}"
            )


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv)
