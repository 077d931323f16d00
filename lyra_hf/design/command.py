"""Propose the next variants to measure, from a trained model or seed ensemble (machine-learning-guided directed
evolution):

    lyra-design --model runs/round1/best --sequence MKTAYIAKQR... --positions 39-42 --max-mutations 4 \\
                --exclude train.csv --acquisition ucb:1 --num-designs 96 --output-dir round2/

Every candidate of the design space (--positions x --letters, at most --max-mutations changes at once) or of a
--candidates library is scored exactly, from the wild type's cached activations (as lyra-scan scores mutants), and
--num-designs are chosen: best first by the acquisition, among those that keep every --constraint, none of them a
sequence of --exclude, each at least --min-distance from the others and at most --max-per-site changing one position.
Outputs, written together once complete: designs.csv (rank, sequence, mutations such as V39A:D40G, each target's
prediction and an ensemble's spread, the objective, the acquisition value, the distance to the wild type and to the
nearest measured sequence), design.json (what was asked, how many were chosen and, for a smaller batch, why),
candidates.parquet (every scored candidate) and design.png.
"""

import argparse
import time
from pathlib import Path

from .. import cli
from ..checkpoints import load_models
from ..cpu import configure_threads, plan_processes
from ..data import read_table
from ..outputs import locked_output_dir, refuse_earlier_outputs, replacing_outputs, write_csv, write_json
from .designer import DesignOptions, design


DESIGN_OUTPUTS = ("designs.csv", "design.json", "candidates.parquet", "design.png")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="lyra-design", description=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint or seed-ensemble directory, or Hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", help="the wild type")
    source.add_argument("--fasta", help="a FASTA file holding the wild type (one record)")
    parser.add_argument(
        "--output-dir", required=True, help="folder for designs.csv, design.json, candidates.parquet and design.png"
    )
    parser.add_argument(
        "--candidates", help="a CSV, TSV or FASTA library of variants to choose among, instead of the design space"
    )
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        help="CSV, TSV or FASTA files of sequences already measured (e.g. the training file): never proposed",
    )
    parser.add_argument(
        "--sequence-column", default="sequence", help="column of the sequences in --candidates and --exclude CSV files"
    )
    cli.add_options(parser, DesignOptions, "the design space and the choice")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint")
    parser.add_argument("--no-figures", action="store_true", help="no design.png (no matplotlib needed)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier design's files in --output-dir")
    cli.add_cpu_flags(parser)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.candidates and (args.positions or args.letters):
        parser.error("--candidates chooses among a library; --positions and --letters describe a design space instead")
    return args


def read_sequences(path: str, column: str, flag: str) -> list[str]:
    """The sequences of a CSV, TSV or FASTA file."""
    table = read_table(path)
    if column not in table.column_names:
        raise ValueError(
            f"{flag} {path} has no column {column!r} (its columns: {', '.join(table.column_names)}); name it with "
            "--sequence-column."
        )
    return [str(sequence) for sequence in table[column]]


def wild_type(args: argparse.Namespace) -> str:
    if not args.fasta:
        return args.sequence
    records = read_table(args.fasta, fasta=True)
    if len(records) != 1:
        raise ValueError(
            f"--fasta {args.fasta} holds {len(records)} records; lyra-design designs around one wild type."
        )
    return records["sequence"][0]


def design_options(args: argparse.Namespace) -> DesignOptions:
    return DesignOptions(**{name: getattr(args, name) for name in DesignOptions.__dataclass_fields__})


def run(args: argparse.Namespace) -> None:
    """Check every input and the output folder, score, choose, and write the outputs together."""
    output_dir = Path(args.output_dir)
    sequence = wild_type(args)
    library = read_sequences(args.candidates, args.sequence_column, "--candidates") if args.candidates else None
    measured = [entry for path in args.exclude for entry in read_sequences(path, args.sequence_column, "--exclude")]
    with locked_output_dir(output_dir):
        if not args.overwrite:
            earlier = [name for name in DESIGN_OUTPUTS if (output_dir / name).exists()]
            refuse_earlier_outputs(
                f"--output-dir {output_dir}", earlier, "an earlier design", "--overwrite to replace it"
            )
        tokenizer, models = load_models(args.model, args.revision)
        processes, threads = plan_processes(args.num_processes, args.threads)
        configure_threads(threads)
        started = time.perf_counter()
        result = design(models, tokenizer, sequence, design_options(args), library, measured, processes=processes)
        with replacing_outputs(output_dir, DESIGN_OUTPUTS) as (temporary, written):
            write_csv(temporary / "designs.csv", result.designs.to_dict())
            write_json(temporary / "design.json", design_record(args, result))
            candidates = result.candidates | {"chosen_rank": chosen_ranks(result)}
            import datasets

            datasets.Dataset.from_dict(candidates).to_parquet(str(temporary / "candidates.parquet"))
            if cli.figures_wanted(args, "lyra-design"):
                from .figures import plot_design

                plot_design(result, temporary / "design.png")
    seconds = time.perf_counter() - started
    print(
        f"lyra-design: {len(result.designs)} designs chosen from {len(result.candidates['sequence']):,} candidates in "
        f"{seconds:.1f} s -> {', '.join(map(str, written))}"
    )


def design_record(args: argparse.Namespace, result) -> dict:
    """designs.csv's metadata: what was asked, what the batch holds and, where it is smaller, why."""
    return {
        "command": "lyra-design",
        "arguments": {name: value for name, value in vars(args).items() if not callable(value)},
        "num_designs_asked": args.num_designs,
        "num_designs_chosen": len(result.chosen),
        "smaller_batch_reason": result.smaller_batch_reason,
        "candidates_scored": len(result.candidates["sequence"]),
        "space_size": result.space_size,
    }


def chosen_ranks(result) -> list[int | None]:
    """Each candidate's rank in the chosen batch, None for the others."""
    ranks = [None] * len(result.candidates["sequence"])
    for rank, index in enumerate(result.chosen, 1):
        ranks[index] = rank
    return ranks


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv)
