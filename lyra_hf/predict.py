"""`lyra-predict`: run a trained Lyra checkpoint (a local directory or a Hub id) over a CSV, TSV or FASTA file.

    lyra-predict --model runs/fitness/best --input variants.csv --output predictions.csv

The output holds the input's columns plus one column per regression target (`predicted_<target>`), or the predicted
class and one probability column per class, or the per-residue labels of a token classifier. Sequences are batched by
length so that little compute goes to padding; the file is written atomically and never overwritten without
`--overwrite`.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from . import cli
from .checkpoints import load_checkpoint, write_csv
from .data import SEQUENCE_COLUMN, check_columns, check_rows, read_table
from .tasks import task_of


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="lyra-predict", description=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub id (e.g. runs/fitness/best)")
    parser.add_argument("--input", required=True, help="CSV, TSV or FASTA file of sequences")
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--sequence-column", default=SEQUENCE_COLUMN)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--unknown", choices=("error", "unk"), default="error", help="characters outside the alphabet: reject the file, or map them to [UNK]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--trust-remote-code", action="store_true", help="run a checkpoint's own modeling code (not needed with lyra-hf installed)")
    return parser


def length_buckets(lengths: list[int], batch_size: int) -> list[np.ndarray]:
    """Indices in batches of similar length (sorted by length, then cut), so padding stays small."""
    order = np.argsort(lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def predict(model, tokenizer, sequences: list[str], batch_size: int = 256, device: str = "cpu") -> list:
    """Model outputs per sequence, in input order: a float32 array of logits for sequence heads (one per target or
    class), an array of shape (length, num_labels) for token classification."""
    model.to(device)
    outputs = [None] * len(sequences)
    for indices in length_buckets([len(sequence) for sequence in sequences], batch_size):
        batch = tokenizer([sequences[index] for index in indices], padding=True, padding_side="right", return_tensors="pt")
        logits = model(**batch.to(device)).logits.float().cpu().numpy()
        for row, index in enumerate(indices):
            # Per-residue logits: one token per residue, so the sequence's own positions are the first len(sequence).
            outputs[index] = logits[row, : len(sequences[index])] if logits.ndim == 3 else logits[row]
    return outputs


def prediction_columns(config, outputs: list) -> dict[str, list]:
    """Output columns named after the checkpoint's targets or classes (`config.id2label`)."""
    names = [config.id2label[index] for index in range(config.num_labels)]
    task = task_of(config).name
    if task == "regression":
        values = np.stack(outputs)
        return {f"predicted_{name}": values[:, column].tolist() for column, name in enumerate(names)}
    if task == "token-classification":
        separator = "" if all(len(name) == 1 for name in names) else " "
        return {"predicted_labels": [separator.join(names[label] for label in logits.argmax(-1)) for logits in outputs]}
    probabilities = torch.softmax(torch.from_numpy(np.stack(outputs)), dim=-1).numpy()
    columns = {"predicted_label": [names[label] for label in probabilities.argmax(-1)]}
    columns.update({f"probability_{name}": probabilities[:, column].tolist() for column, name in enumerate(names)})
    return columns


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")


def run(args: argparse.Namespace) -> str:
    output = Path(args.output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a directory; name the CSV file to write.")
    if output.exists() and not args.overwrite:
        raise ValueError(f"--output {output} exists; pass --overwrite to replace it.")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"No directory {output.parent} for --output {output}.")
    table = read_table(args.input)
    check_columns(table, [args.sequence_column], f"input file {args.input}")
    tokenizer, model = load_checkpoint(args.model, args.revision, args.trust_remote_code)
    letters = getattr(tokenizer, "letters", None) if args.unknown == "error" else None
    check_rows(table, args.sequence_column, [], "prediction", f"input file {args.input}", letters, getattr(tokenizer, "padding_characters", ""))
    sequences = ["".join(sequence.split()) for sequence in table[args.sequence_column]]
    outputs = predict(model, tokenizer, sequences, args.batch_size, args.device)
    columns = {name: list(table[name]) for name in table.column_names}
    columns.update(prediction_columns(model.config, outputs))
    try:
        write_csv(output, columns, overwrite=args.overwrite)
    except FileExistsError:
        raise ValueError(f"--output {output} was created by someone else during this run; pass --overwrite to replace it.") from None
    return f"lyra-predict: wrote {output}"


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
