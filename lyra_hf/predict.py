"""`lyra-predict`: run a trained Lyra checkpoint (a local directory or a Hub id) over a CSV, TSV or FASTA file.

    lyra-predict --model runs/fitness/best --input variants.csv --output predictions.csv

The output holds the input's columns plus one column per regression target (`predicted_<target>`), or the predicted
class and one probability column per class, or the per-residue labels of a token classifier. A seed ensemble (a folder
or Hub repo with `ensemble.json`, see `lyra-train --ensemble`) predicts the members' mean (of class probabilities for
classifiers, per residue for token classifiers) and adds the members' standard deviation beside each value
(`predicted_<target>_std`, `probability_<class>_std`; NumPy's, ddof 0). The input is read, checked, predicted and
written in chunks of 10,000 rows (memory does not grow with the file); within a chunk sequences are batched by length
so that little compute goes to padding (on a CPU, at most 8,192 tokens a batch at the default width, fewer for wider
models), and the batches are shared out over one pool of single-threaded worker processes, one per usable CPU, which
predicts the next chunk while this process writes the last. The file is written under a temporary name, renamed when
complete, and never overwritten without `--overwrite`.
"""

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import cli
from .checkpoints import load_models, member_columns
from .cpu import WorkerPool, configure_threads, cpu_batch_tokens, plan_processes
from .data import SEQUENCE_COLUMN, check_columns, check_rows, stream_table
from .outputs import atomic_text, refuse_earlier_outputs
from .tasks import task_of


CHUNK_ROWS = 10_000


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="lyra-predict", description=__doc__)
    parser.add_argument(
        "--model", required=True, help="checkpoint or seed-ensemble directory, or Hub id (e.g. runs/fitness/best)"
    )
    parser.add_argument("--input", required=True, help="CSV, TSV or FASTA file of sequences")
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--sequence-column", default=SEQUENCE_COLUMN, help="column of the sequences (CSV, TSV)")
    parser.add_argument(
        "--batch-size",
        type=cli.POSITIVE_INT,
        default=256,
        help=f"rows per batch at most; on a CPU also at most {cpu_batch_tokens(64):,} tokens (at width 64; fewer for "
        "wider models)",
    )
    parser.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint")
    parser.add_argument(
        "--device", type=cli.device, default="cuda" if torch.cuda.is_available() else "cpu", help="where the model runs"
    )
    parser.add_argument(
        "--unknown",
        choices=("error", "unk"),
        help="characters outside the alphabet: reject the file, or map them to [UNK] (default: as the model's "
        "tokenizer does, which is how it was trained)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run a checkpoint's own modeling code (not needed with lyra-hf installed)",
    )
    cli.add_cpu_flags(parser)
    return parser


def length_buckets(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Indices in batches of similar length (sorted by length, then cut), so padding stays small: at most `batch_size`
    rows each, and with `max_tokens` at most that many tokens once padded (a longer sequence makes a batch alone)."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        # Sorted by length, so the row about to join is the longest and sets the padded length.
        while (
            end < len(order)
            and end - start < batch_size
            and (max_tokens is None or (end - start + 1) * lengths[order[end]] <= max_tokens)
        ):
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def batch_tokens(models: list, device: str) -> int | None:
    """Padded tokens per batch at most: on a CPU, what suits the widest model (`lyra_hf.cpu.cpu_batch_tokens`); on an
    accelerator no limit beyond `--batch-size`."""
    return (
        cpu_batch_tokens(max(getattr(model.config, "hidden_size", 64) for model in models))
        if str(device) == "cpu"
        else None
    )


@torch.no_grad()
def predict_batch(state: dict, sequences: list[str]) -> np.ndarray:
    """Logits of one batch from every model, stacked: (num_models, batch, ...) (run in this process or a worker;
    `state` holds the models, tokenizer and device)."""
    batch = state["tokenizer"](sequences, padding=True, padding_side="right", return_tensors="pt").to(state["device"])
    return np.stack([model(**batch).logits.float().cpu().numpy() for model in state["models"]])


def predict(
    models, tokenizer, sequences: list[str], batch_size: int = 256, device: str = "cpu", processes: int = 1
) -> list:
    """Model outputs per sequence, in input order: a float32 array of logits for sequence heads (one per target or
    class), an array of shape (length, num_labels) for token classification. `models` is one model, or a list (an
    ensemble's members, see `load_models`), which puts the member first: (num_models, num_labels) or (num_models,
    length, num_labels). With `processes` > 1 the batches run in that many single-threaded worker processes; the
    batches and so the outputs are the same."""
    members = models if isinstance(models, (list, tuple)) else [models]
    for model in members:
        model.to(device)
    with WorkerPool({"models": members, "tokenizer": tokenizer, "device": device}, processes) as workers:
        outputs = submit(workers, sequences, batch_size, batch_tokens(members, device))()
    return outputs if members is models else [output[0] for output in outputs]


def submit(
    workers: WorkerPool, sequences: list[str], batch_size: int, max_tokens: int | None = None
) -> Callable[[], list]:
    """Hand `sequences` to a pool of workers that holds the model (see `predict_batch`), in batches of at most
    `batch_size` rows and `max_tokens` padded tokens; returns a function that waits for `predict`'s outputs. Worker
    processes start at once, so the caller can write one chunk while the next is predicted."""
    buckets = length_buckets([len(sequence) for sequence in sequences], batch_size, max_tokens)
    results = workers.map(predict_batch, ([sequences[index] for index in indices] for indices in buckets))

    def outputs() -> list:
        ordered = [None] * len(sequences)
        for indices, logits in zip(buckets, results):
            for row, index in enumerate(indices):
                # Per-residue logits: one token per residue, so the sequence's own positions are the first
                # len(sequence). Copied: a view would keep the whole batch's array alive.
                ordered[index] = (
                    logits[:, row, : len(sequences[index])].copy() if logits.ndim == 4 else logits[:, row].copy()
                )
        return ordered

    return outputs


def prediction_columns(config, outputs: list) -> dict[str, list]:
    """Output columns named after the checkpoint's targets or classes (`config.id2label`), from `predict`'s outputs
    with the member axis first. Over several members: the mean, and its standard deviation in a `_std` column."""
    names = [config.id2label[index] for index in range(config.num_labels)]
    task = task_of(config)
    members = outputs[0].shape[0] if outputs else 1

    def mean_and_std(prefix: str, values: np.ndarray) -> dict[str, list]:
        return {
            key: value.tolist() for key, value in member_columns(values, [f"{prefix}{name}" for name in names]).items()
        }

    if task.numeric_labels:
        return mean_and_std("predicted_", np.stack(outputs).reshape(len(outputs), members, len(names)))
    if task.labels_per_residue:
        separator = "" if all(len(name) == 1 for name in names) else " "
        labels = [torch.softmax(torch.from_numpy(logits), dim=-1).mean(0).argmax(-1) for logits in outputs]
        return {"predicted_labels": [separator.join(names[label] for label in residues) for residues in labels]}
    probabilities = (
        torch.softmax(torch.from_numpy(np.stack(outputs)), dim=-1).numpy().reshape(len(outputs), members, len(names))
    )
    columns = {"predicted_label": [names[label] for label in probabilities.mean(1).argmax(-1)]}
    columns.update(mean_and_std("probability_", probabilities))
    return columns


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Every flag value is checked by its type (see `build_parser`)."""
    return args


def check_output(args: argparse.Namespace) -> Path:
    """`--output`, refused before any work when it is a folder, a dangling link, or a file without --overwrite."""
    output = Path(args.output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a directory; name the CSV file to write.")
    if output.is_symlink() and not output.exists():
        target = os.readlink(output)
        raise ValueError(
            f"--output {output} is a link to {target}, which does not exist; name a file to write, or remove the link."
        )
    if not args.overwrite:
        earlier = [output.name] if output.exists() else []
        refuse_earlier_outputs(f"--output {output}", earlier, None, "--overwrite to replace it")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"No directory {output.parent} for --output {output}.")
    return output


def check_input(args: argparse.Namespace, chunks, tokenizer, config, where: str) -> int:
    """Check every row of the input before any is predicted (a bad row near the end of a large file fails in
    seconds): its letters, as the tokenizer or `--unknown` says, and its length, as the model's per-position terms
    read it; the number of rows."""
    unknown = args.unknown or getattr(tokenizer, "unknown", "error")
    if unknown == "unk" and hasattr(tokenizer, "unknown"):
        tokenizer.unknown = "unk"  # --unknown unk over a tokenizer saved to refuse: map, as asked
    letters = getattr(tokenizer, "letters", None) if unknown == "error" else None
    padding = getattr(tokenizer, "padding_characters", "")
    rows = 0
    for chunk in chunks:
        check_rows(
            chunk, args.sequence_column, [], None, where, letters, padding, first_row=rows + 1, model_config=config
        )
        rows += len(chunk[args.sequence_column])
    return rows


def run(args: argparse.Namespace) -> str:
    output = check_output(args)
    where = f"input file {args.input}"
    columns, chunks = stream_table(args.input, CHUNK_ROWS)
    check_columns(columns, [args.sequence_column], where)
    tokenizer, models = load_models(args.model, args.revision, args.trust_remote_code)
    rows = check_input(args, chunks, tokenizer, models[0].config, where)
    processes, threads = plan_processes(args.num_processes, args.threads) if args.device == "cpu" else (1, args.threads)
    configure_threads(threads)
    for model in models:
        model.to(args.device)
    max_tokens = batch_tokens(models, args.device)
    state = {"models": models, "tokenizer": tokenizer, "device": args.device}
    started = time.perf_counter()
    try:
        with (
            atomic_text(output, args.overwrite) as stream,
            tqdm(total=rows, unit=" rows", disable=None, desc="lyra-predict") as progress,
            WorkerPool(state, processes) as workers,
        ):
            writer = csv.writer(stream)

            def write(chunk_index: int, chunk: dict, outputs: Callable[[], list]) -> None:
                predicted = prediction_columns(models[0].config, outputs())
                if chunk_index == 0:
                    writer.writerow([*columns, *predicted])
                writer.writerows(zip(*chunk.values(), *predicted.values()))
                progress.update(len(chunk[args.sequence_column]))

            # Two chunks in flight: the workers predict the next while this process writes the last.
            pending = []
            for chunk_index, chunk in enumerate(stream_table(args.input, CHUNK_ROWS)[1]):
                sequences = ["".join(sequence.split()) for sequence in chunk[args.sequence_column]]
                pending.append((chunk_index, chunk, submit(workers, sequences, args.batch_size, max_tokens)))
                if len(pending) == 2:
                    write(*pending.pop(0))
            for entry in pending:
                write(*entry)
    except FileExistsError:
        raise ValueError(
            f"--output {output} was created by someone else during this run; pass --overwrite to replace it."
        ) from None
    seconds = time.perf_counter() - started
    return f"lyra-predict: wrote {output} ({rows:,} rows in {seconds:.1f} s, {rows / seconds:,.0f} rows/s)"


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
