"""`lyra-train`: train Lyra on sequence files (or a built-in synthetic fitness landscape) with Accelerate.

The same command runs on a laptop CPU, one GPU or many processes and nodes:

    lyra-train --train-file train.csv --label-columns fitness --output-dir runs/fitness
    accelerate launch --num_processes 4 scripts/train.py --train-file train.csv ...
    lyra-train runs/fitness/options.json --output-dir runs/again      # the same run again

Per epoch: validation metrics (gathered across processes, every sample exactly once), an atomic `accelerator.save_state`
checkpoint in `OUTPUT_DIR/checkpoints/epoch_NNNN`, and the best epoch so far as a `save_pretrained` model and tokenizer
in
`OUTPUT_DIR/best`. After training, the best model is scored once on the test split and everything lands in
`OUTPUT_DIR/results.json`; the run's options are in `OUTPUT_DIR/options.json`. `--resume-from-checkpoint latest`
continues a killed run from its last complete epoch and ends where the uninterrupted run would have. `--fold-column`
cross-validates (one such run per fold) and `--ensemble N` trains a seed ensemble (one run per member, then the
ensemble in `OUTPUT_DIR/best`).
"""

import argparse
import sys

from . import cli
from .training import OptionsError, TrainOptions, run
from .training.options import OPTION_GROUPS


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="lyra-train", description=__doc__)
    parser.add_argument(
        "options_file",
        nargs="?",
        metavar="OPTIONS_JSON",
        help="a JSON object of options (a run's options.json); flags given beside it override its values",
    )
    for group in OPTION_GROUPS:
        cli.add_options(parser, group, cli.CPU_TITLE if group is cli.CpuOptions else group.title)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrainOptions:
    """The options the flags give, or a usage error (exit 2) naming the flags that contradict each other."""
    try:
        return TrainOptions(
            **{key: value for key, value in vars(args).items() if key != "options_file"}, rerun_of=args.options_file
        )
    except OptionsError as error:
        parser.error(str(error))


def parse_options(argv: list[str] | None = None) -> TrainOptions:
    """The options `lyra-train argv` would run with (usage errors exit as the command does)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    return check_args(parser, cli.parse_command_line(parser, argv))


def resume_hint(argv: list[str]) -> str:
    """What to run after an interrupt: the same command, continuing from the last complete epoch."""
    drop = {"--resume-from-checkpoint": True, "--overwrite-output-dir": False}
    return "resume with: " + cli.rerun_hint("lyra-train", argv, drop, add=("--resume-from-checkpoint", "latest"))


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv, after_interrupt=resume_hint)


if __name__ == "__main__":
    sys.exit(main())
