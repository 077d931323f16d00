"""`lyra-prior`: a zero-shot prior table for `lyra-train --prior`, with its heatmap.

    lyra-prior --alignment family.a2m --output prior.csv                          # site-independent model
    lyra-prior --model facebook/esm2_t33_650M_UR50D --sequence MKTAYIAKQR... --output prior.csv   # masked marginals

From a multiple sequence alignment (A2M, A3M or aligned FASTA; its first sequence is the wild type): each position's
reweighted, smoothed letter frequencies, a substitution's score the log ratio of the new letter's to the wild
type's. From a masked protein language model that transformers loads (a Hub id or a local folder): masked marginals
(each position masked in turn, in batches) or wild-type marginals (one pass). The table lists one row per scored
substitution (`position,wild_type,letter,score`); the heatmap is written beside it (`.png`).
"""

import argparse
import sys
from pathlib import Path

import torch

from .. import cli
from ..checkpoints import resolve_checkpoint
from ..outputs import refuse_earlier_outputs
from ..tokenization_lyra import alphabet_letters
from .alignment import site_independent_prior
from .figures import plot_prior
from .language_model import METHODS, language_model_prior
from .table import write_prior


UNKNOWN_SYMBOLS = {"protein": "X", "dna": "N", "rna": "N"}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="lyra-prior", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--alignment", help="A2M, A3M or aligned FASTA file; the first sequence is the wild type")
    source.add_argument(
        "--model", help="a masked language model (Hub id or local folder) that AutoModelForMaskedLM loads"
    )
    parser.add_argument("--sequence", help="with --model: the wild type")
    parser.add_argument(
        "--method", choices=METHODS, default="masked-marginals", help="with --model: how substitutions are scored"
    )
    parser.add_argument(
        "--first-position",
        type=cli.POSITIVE_INT,
        default=1,
        help="with --alignment: the wild type's position of the query's first residue",
    )
    parser.add_argument(
        "--alphabet",
        default="protein",
        help="the letters scored: protein, dna, rna (but X or N) or a custom alphabet's letters",
    )
    parser.add_argument("--output", required=True, help="CSV file to write (the heatmap goes beside it, as .png)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--no-figures", action="store_true", help="write the table only")
    parser.add_argument(
        "--batch-size", type=cli.POSITIVE_INT, default=16, help="with --model: masked positions per forward pass"
    )
    parser.add_argument(
        "--device",
        type=cli.device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the language model runs",
    )
    parser.add_argument("--revision", help="with --model: branch, tag or commit of a Hub model")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.model and not args.sequence:
        parser.error("--model needs --sequence, the wild type whose substitutions it scores")
    if args.alignment and args.sequence:
        parser.error("--sequence goes with --model; an alignment's first sequence is its wild type")
    try:
        letters = alphabet_letters(args.alphabet)
    except ValueError as error:
        parser.error(f"--alphabet: {error}")
    # A named alphabet's symbol for an unknown residue (X, N) is no substitution to score.
    args.letters = letters.replace(UNKNOWN_SYMBOLS.get(args.alphabet.strip().lower(), ""), "")
    if args.sequence and (outside := sorted(set(args.sequence.strip().upper()) - set(args.letters))):
        parser.error(f"--sequence holds {''.join(outside)!r}, outside the alphabet {args.letters!r}")
    return args


def run(args: argparse.Namespace) -> str:
    output = Path(args.output)
    figure = output.with_suffix(".png")
    if output.is_dir():
        raise ValueError(f"--output {output} is a directory; name the CSV file to write.")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"No directory {output.parent} for --output {output}.")
    if not args.overwrite:
        earlier = [path.name for path in (output, figure) if path.exists()]
        refuse_earlier_outputs(f"--output {output}", earlier, None, "--overwrite to replace it")
    draw = cli.figures_wanted(args, "lyra-prior")
    if args.alignment:
        prior = site_independent_prior(args.alignment, args.letters, args.first_position)
    else:
        prior = language_model_prior(
            *load_language_model(args.model, args.revision),
            args.sequence,
            args.letters,
            args.method,
            args.batch_size,
            args.device,
        )
    write_prior(prior, output)
    if draw:
        plot_prior(prior, figure)
    scored = int((~torch.as_tensor(prior.scores).isnan()).sum()) - sum(
        letter in prior.letters for letter in prior.wild_type
    )
    return f"lyra-prior: {scored:,} substitutions of a {len(prior.wild_type)}-residue wild type scored in {output}" + (
        f" (heatmap {figure})" if draw else ""
    )


def load_language_model(name: str, revision: str | None):
    """A masked language model and its tokenizer, safetensors weights only (pickled ones can run code when loaded); a
    name that is neither a local folder nor reachable on the Hub is refused in one line."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    source = resolve_checkpoint(name)
    try:
        return AutoModelForMaskedLM.from_pretrained(
            source, revision=revision, use_safetensors=True
        ), AutoTokenizer.from_pretrained(source, revision=revision)
    except OSError as error:
        raise ValueError(f"--model {name}: {cli.one_line(error)}") from None


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
