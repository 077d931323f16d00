"""Mutational scanning: score every single mutant and chosen double mutants of a wild type, with epistasis.

    lyra-scan --model runs/fitness/best --sequence MKTAYIAKQR... --pairs 10-20,45 --output-dir scan/

Singles: every position x every other residue letter of the checkpoint's alphabet (not X, nor N of DNA and RNA: they
stand for an unknown residue), `delta = score - score(wild type)`. Pairs:
all substitution pairs at chosen positions, `epistasis = f(ab) - f(a) - f(b) + f(wt)`. Mutants are built directly as
token ids (no string round trip) and scored in batches by a model in eval mode, which reuses its cached S4D kernels
because every mutant has the wild type's length. Regression checkpoints give one score per target; classifiers give
the probability of one class (`target`). Positions are 1-based everywhere. A seed ensemble (`lyra-train --ensemble`)
gives the members' mean of every score, delta and epistasis, and their standard deviation in a `_std` column beside
each (NumPy's, ddof 0, over members, each member's delta taken from its own wild-type score); `--heatmap std` draws
the standard deviation of the single-mutant deltas instead of their mean.

Each wild type's tables and figures go to one folder (`--output-dir`, or a subfolder per FASTA record named after its
ID), replacing an earlier scan's files there only with `--overwrite`, and only once the new ones are complete.
"""

import argparse
import importlib.util
import itertools
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from . import cli
from .checkpoints import load_models, locked_output_dir, replacing_outputs, write_csv
from .cpu import CPU_BATCH_TOKENS, WorkerPool, configure_threads, plan_processes
from .data import read_table
from .tasks import task_of


SCAN_OUTPUTS = ("singles.csv", "pairs.csv", "singles_heatmap.png", "positions.png", "epistasis.png")
# Characters a FASTA ID keeps in its folder name; the others (path separators among them) become "_".
UNSAFE_IN_FOLDER_NAME = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass
class ScanResult:
    """The tables of one scan. `singles` has columns position, wild_type, mutant, then score and delta (suffixed with
    the target's name when the model has several); `pairs` (or `None`) has position_a, wild_type_a, mutant_a,
    position_b, wild_type_b, mutant_b, score, delta and epistasis. From an ensemble of `members` models each value is
    the members' mean, with its standard deviation in a `_std` column after it (e.g. `delta_std`)."""

    sequence: str
    targets: list[str]
    wild_type_scores: dict[str, float]
    singles: datasets.Dataset
    pairs: datasets.Dataset | None = None
    members: int = 1


def target_columns(model, target: str | int | None) -> tuple[list[str], int | None]:
    """The score columns' names, and for classifiers the index of the class whose probability is the score (default:
    the last class, the positive one of a binary classifier)."""
    config = model.config
    names = [str(config.id2label[index]) for index in range(config.num_labels)]
    if config.problem_type == "regression":
        return names, None
    if target is None:
        index = len(names) - 1
    elif str(target) in names:
        index = names.index(str(target))
    elif str(target).isdigit() and int(target) < len(names):
        index = int(target)
    else:
        raise ValueError(f"--target {target!r} is not a class of this model: {names}.")
    return [f"probability_{names[index]}"], index


def check_model(model) -> None:
    if not task_of(model.config).scores_whole_sequences:
        raise ValueError("Token-classification checkpoints are not supported: a scan scores whole sequences, use a sequence regression or classification checkpoint.")


def mutant_letters(tokenizer) -> str:
    """The letters a scan substitutes: the alphabet's residues, without X (any amino acid) and, in a nucleotide
    alphabet, N (any base)."""
    ambiguous = "XN" if set(tokenizer.letters) <= set("ACGTUN") else "X"
    return "".join(letter for letter in tokenizer.letters if letter not in ambiguous)


def encode_wild_type(tokenizer, sequence: str) -> tuple[str, torch.Tensor, list[int]]:
    """The compact sequence, its token ids, and the 0-based positions that can be mutated (padding characters are
    kept as padding)."""
    sequence = "".join(sequence.split())
    if not sequence:
        raise ValueError("The wild-type sequence is empty.")
    letters = tokenizer.letters
    padding = getattr(tokenizer, "padding_characters", "")
    for position, character in enumerate(sequence, 1):
        if character.upper() not in letters and character.upper() not in padding:
            raise ValueError(f"Wild-type letter {character!r} at position {position} is not in the model's alphabet {letters!r}.")
    input_ids = torch.tensor(tokenizer(sequence)["input_ids"])
    if len(input_ids) != len(sequence):
        raise ValueError("The tokenizer adds special tokens; a scan needs one token per residue.")
    mutable = [index for index, character in enumerate(sequence) if character.upper() in letters]
    if not mutable:
        raise ValueError(f"The wild-type sequence {sequence[:20]!r} holds only padding characters: no residue to mutate.")
    return sequence.upper(), input_ids, mutable


def auto_batch_size(model, length: int, device: torch.device) -> int:
    """Sequences per batch: activations within about a quarter of free memory on a GPU; on a CPU, `CPU_BATCH_TOKENS`."""
    if device.type != "cuda":
        return max(1, CPU_BATCH_TOKENS // length)
    hidden = getattr(model.config, "hidden_size", 64)
    bytes_per_sequence = 4 * length * hidden * 16  # the widest intermediate (PGC 4d channels, FFT buffers) with margin
    return int(max(1, min(4096, torch.cuda.mem_get_info(device)[0] // 4 // bytes_per_sequence)))


@torch.no_grad()
def score_batch(state: dict, input_ids: np.ndarray) -> np.ndarray:
    """Scores of one batch of token ids by every model, (batch, num_models, num_targets) (run in this process or a
    worker; `state` holds the models, device and class)."""
    batch = torch.from_numpy(input_ids).to(state["device"])
    scores = []
    for model in state["models"]:
        logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits.float()
        if state["class_index"] is not None:
            logits = logits.softmax(-1)[:, state["class_index"] : state["class_index"] + 1]
        scores.append(logits.cpu().numpy().astype(np.float64))
    return np.stack(scores, axis=1)


def score_ids(workers: WorkerPool, input_ids: torch.Tensor, batch_size: int, description: str, progress: bool = True) -> np.ndarray:
    """Scores of a (num_sequences, length) batch of token ids, (num_sequences, num_models, num_targets) floats, from a
    pool of workers that holds the models (see `score_batch`); a pool of several processes scores the same batches and
    so gives the same scores."""
    # At least 8 batches when there is enough work, so that workers finish together; the same with one process.
    batch_size = max(1, min(batch_size, max(64, math.ceil(len(input_ids) / 8))))
    starts = range(0, len(input_ids), batch_size)
    batches = (input_ids[start : start + batch_size].numpy() for start in starts)
    scores = list(tqdm(workers.map(score_batch, batches), total=len(starts), desc=description, disable=not progress, leave=False))
    if scores:
        return np.concatenate(scores)
    state = workers.state
    return np.zeros((0, len(state["models"]), 1 if state["class_index"] is not None else state["models"][0].config.num_labels))


def parse_positions(spec: str, length: int) -> list[int]:
    """`"10-20,45,47"` -> 1-based positions, checked against the sequence length."""
    positions = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            first, _, last = part.partition("-")
            first, last = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"--pairs: {part!r} is not a position or a range like 10-20.") from None
        if not 1 <= first <= last <= length:
            raise ValueError(f"--pairs: positions {part} are outside the sequence (1-{length}).")
        positions.update(range(first, last + 1))
    if len(positions) < 2:
        raise ValueError(f"--pairs {spec!r} names fewer than two positions.")
    return sorted(positions)


def scan(
    models,
    tokenizer,
    sequence: str,
    pairs: list[int] | None = None,
    top_k: int | None = None,
    target: str | int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    processes: int = 1,
) -> ScanResult:
    """Score every single mutant of `sequence` and, with `pairs` (1-based positions) or `top_k` (the positions with
    the largest single-mutant effect), every double mutant at those positions; with `processes` > 1, in that many
    single-threaded worker processes (same scores). `models` is one model or an ensemble's members (`load_models`)."""
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    model = models[0]
    check_model(model)
    device = torch.device(device or next(model.parameters()).device)
    for member in models:
        member.eval().to(device)
    targets, class_index = target_columns(model, target)
    sequence, wild_ids, mutable = encode_wild_type(tokenizer, sequence)
    length = len(wild_ids)
    letters = mutant_letters(tokenizer)
    letter_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(letters)))
    batch_size = batch_size or auto_batch_size(model, length, device)

    state = {"models": models, "device": device, "class_index": class_index}
    wild_score = score_batch(state, wild_ids[None].numpy())[0]
    # Singles: every mutable position x every letter other than the wild type's.
    single_positions, single_letters = [], []
    for position in mutable:
        for letter_index, token_id in enumerate(letter_ids.tolist()):
            if token_id != int(wild_ids[position]):
                single_positions.append(position)
                single_letters.append(letter_index)
    mutants = wild_ids.repeat(len(single_positions), 1)
    mutants[torch.arange(len(single_positions)), torch.tensor(single_positions, dtype=torch.long)] = letter_ids[single_letters]
    # One pool for the singles and the doubles: its workers keep their memory from one batch to the next.
    with WorkerPool(state, processes) as workers:
        single_scores = score_ids(workers, mutants, batch_size, "single mutants", progress)
        single_deltas = single_scores - wild_score

        def score_columns(**values):
            """Columns per target: each of `values` (rows, members, targets) as the members' mean, and its standard
            deviation after it when there are several."""
            columns = {}
            for column, name in enumerate(targets):
                suffix = "" if len(targets) == 1 else f"_{name}"
                for kind, array in values.items():
                    columns[f"{kind}{suffix}"] = array[:, :, column].mean(1).tolist()
                    if len(models) > 1:
                        columns[f"{kind}{suffix}_std"] = array[:, :, column].std(1).tolist()
            return columns

        singles = datasets.Dataset.from_dict(
            {
                "position": [position + 1 for position in single_positions],
                "wild_type": [sequence[position] for position in single_positions],
                "mutant": [letters[index] for index in single_letters],
                **score_columns(score=single_scores, delta=single_deltas),
            }
        )
        result = ScanResult(sequence, targets, dict(zip(targets, wild_score.mean(0).tolist())), singles, members=len(models))

        if pairs is None and top_k:
            effect = np.zeros(length)
            np.maximum.at(effect, np.array(single_positions), np.abs(single_deltas[:, :, 0].mean(1)))
            pairs = sorted((np.argsort(-effect, kind="stable")[: max(2, top_k)] + 1).tolist())
        if pairs:
            if any(not 1 <= position <= length for position in pairs):
                raise ValueError(f"Pair positions must lie in 1-{length}, got {pairs}.")
            index_of = {(position, letter): row for row, (position, letter) in enumerate(zip(single_positions, single_letters))}
            mutable_positions = set(mutable)
            chosen = [position - 1 for position in pairs if position - 1 in mutable_positions]
            rows = [
                (a, letter_a, b, letter_b)
                for a, b in itertools.combinations(chosen, 2)
                for letter_a in range(len(letters))
                for letter_b in range(len(letters))
                if (a, letter_a) in index_of and (b, letter_b) in index_of
            ]
            doubles = wild_ids.repeat(len(rows), 1)
            if rows:
                a, letter_a, b, letter_b = (torch.tensor(column, dtype=torch.long) for column in zip(*rows))
                doubles[torch.arange(len(rows)), a] = letter_ids[letter_a]
                doubles[torch.arange(len(rows)), b] = letter_ids[letter_b]
            double_scores = score_ids(workers, doubles, batch_size, "double mutants", progress)
            single_a = single_scores[np.array([index_of[(row[0], row[1])] for row in rows], dtype=np.int64)]
            single_b = single_scores[np.array([index_of[(row[2], row[3])] for row in rows], dtype=np.int64)]
            epistasis = double_scores - single_a - single_b + wild_score
            result.pairs = datasets.Dataset.from_dict(
                {
                    "position_a": [row[0] + 1 for row in rows],
                    "wild_type_a": [sequence[row[0]] for row in rows],
                    "mutant_a": [letters[row[1]] for row in rows],
                    "position_b": [row[2] + 1 for row in rows],
                    "wild_type_b": [sequence[row[2]] for row in rows],
                    "mutant_b": [letters[row[3]] for row in rows],
                    **score_columns(score=double_scores, delta=double_scores - wild_score, epistasis=epistasis),
                }
            )
        return result


# --- figures -----------------------------------------------------------------------------------------------------


def plot(result: ScanResult, output_dir: Path, letters: str, heatmap: str = "delta") -> list[Path]:
    """PNG figures of the first target: position x letter heatmap of deltas (wild type marked; with `heatmap="std"`,
    an ensemble's standard deviation of them), per-position mean and minimum delta, and the strongest epistasis per
    position pair. Needs matplotlib (`pip install lyra-hf[plot]`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    suffix = "" if len(result.targets) == 1 else f"_{result.targets[0]}"
    length = len(result.sequence)
    def position_by_letter(column: str) -> np.ndarray:
        values = np.full((len(letters), length), np.nan)
        for position, mutant, value in zip(result.singles["position"], result.singles["mutant"], result.singles[column]):
            values[letters.index(mutant), position - 1] = value
        return values

    deltas = position_by_letter(f"delta{suffix}")
    written = []

    figure, axis = plt.subplots(figsize=(max(6, length * 0.18), 4.5))
    extent = (0.5, length + 0.5, len(letters) - 0.5, -0.5)  # 1-based positions on the x axis
    if heatmap == "std":
        shown = position_by_letter(f"delta{suffix}_std")
        image = axis.imshow(shown, aspect="auto", cmap="viridis", vmin=0, interpolation="nearest", extent=extent)
    else:
        limit = np.nanmax(np.abs(deltas)) or 1.0
        image = axis.imshow(deltas, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest", extent=extent)
    for position, character in enumerate(result.sequence, 1):
        if character in letters:
            axis.plot(position, letters.index(character), marker="o", markersize=2.5, color="black")
    axis.set_yticks(range(len(letters)), list(letters), fontsize=6)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("position (wild type marked with dots)")
    if heatmap == "std":
        axis.set_title(f"Single-mutant delta{suffix.replace('_', ' ')}: standard deviation over {result.members} ensemble members")
    else:
        members = f" (mean of {result.members} ensemble members)" if result.members > 1 else ""
        axis.set_title(f"Single-mutant delta{suffix.replace('_', ' ')}{members}")
    figure.colorbar(image, ax=axis, label="delta std" if heatmap == "std" else "delta")
    written.append(_save(figure, output_dir / "singles_heatmap.png"))

    figure, axis = plt.subplots(figsize=(max(6, length * 0.12), 3.5))
    positions = np.arange(1, length + 1)
    # Positions without mutants (padding characters) stay gaps, computed without NumPy's empty-slice warnings.
    scored = ~np.isnan(deltas)
    counts = scored.sum(0)
    with np.errstate(invalid="ignore"):
        mean = np.where(counts > 0, np.where(scored, deltas, 0.0).sum(0) / counts, np.nan)
    minimum = np.where(counts > 0, np.where(scored, deltas, np.inf).min(0), np.nan)
    axis.plot(positions, mean, label="mean delta")
    axis.plot(positions, minimum, label="min delta")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set_xlabel("position")
    axis.set_ylabel("delta")
    axis.legend()
    written.append(_save(figure, output_dir / "positions.png"))

    if result.pairs is not None and len(result.pairs):
        strongest = np.full((length, length), np.nan)
        for a, b, value in zip(result.pairs["position_a"], result.pairs["position_b"], result.pairs[f"epistasis{suffix}"]):
            current = strongest[a - 1, b - 1]
            if np.isnan(current) or abs(value) > abs(current):
                strongest[a - 1, b - 1] = strongest[b - 1, a - 1] = value
        chosen = sorted(set(result.pairs["position_a"]) | set(result.pairs["position_b"]))
        matrix = strongest[np.ix_([p - 1 for p in chosen], [p - 1 for p in chosen])]
        figure, axis = plt.subplots(figsize=(5, 4.5))
        limit = np.nanmax(np.abs(matrix)) or 1.0
        image = axis.imshow(matrix, cmap="PuOr", vmin=-limit, vmax=limit, interpolation="nearest")
        axis.set_xticks(range(len(chosen)), chosen, fontsize=6, rotation=90)
        axis.set_yticks(range(len(chosen)), chosen, fontsize=6)
        axis.set_title("Strongest epistasis per position pair")
        figure.colorbar(image, ax=axis, label="epistasis")
        written.append(_save(figure, output_dir / "epistasis.png"))
    return written


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


# --- command line ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="lyra-scan", description=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint or seed-ensemble directory, or Hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", help="the wild-type sequence")
    source.add_argument("--fasta", help="a FASTA file of wild types (one output folder per record)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--pairs", help="positions for the double-mutant scan, e.g. 10-20,45,47 (1-based)")
    parser.add_argument("--top-k", type=int, help="double-mutant scan over the K positions with the largest single effect")
    parser.add_argument("--target", help="class (name or index) whose probability a classifier scores; default: the last")
    parser.add_argument("--batch-size", type=int, help=f"default: about {CPU_BATCH_TOKENS:,} tokens a batch on a CPU, a quarter of free memory on a GPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--heatmap", choices=("delta", "std"), default="delta", help="what the single-mutant heatmap shows: the delta, or (ensembles) its standard deviation over members")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier scan in the output folders")
    cli.add_cpu_flags(parser)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pairs and args.top_k:
        parser.error("give --pairs or --top-k, not both")
    if args.top_k is not None and args.top_k < 2:
        parser.error(f"--top-k must be at least 2, got {args.top_k}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    cli.check_cpu_flags(parser, args)


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


def write_result(result: ScanResult, folder: Path, letters: str, figures: bool, heatmap: str = "delta") -> list[Path]:
    """Write the tables (and figures) into `folder`, replacing an earlier scan's files there, including those this
    one does not write (e.g. its pairs.csv), once all are complete."""
    with replacing_outputs(folder, SCAN_OUTPUTS) as (temporary, written):
        write_csv(temporary / "singles.csv", result.singles.to_dict())
        if result.pairs is not None:
            write_csv(temporary / "pairs.csv", result.pairs.to_dict())
        if figures:
            plot(result, temporary, letters, heatmap)
    return written


def run(args: argparse.Namespace) -> None:
    """Check every wild type, flag and output folder first, then scan and write each in turn."""
    output_dir = Path(args.output_dir)
    if args.fasta:
        records = read_table(args.fasta, fasta=True)
        wild_types = list(zip(record_folders(records["id"]), records["sequence"]))
    else:
        wild_types = [("", args.sequence)]
    with locked_output_dir(output_dir):
        tokenizer, models = load_models(args.model, args.revision)
        check_model(models[0])
        target_columns(models[0], args.target)
        if args.heatmap == "std" and len(models) == 1:
            raise ValueError(f"--heatmap std shows the spread over an ensemble's members; {args.model} is a single model.")
        jobs = []
        for folder, sequence in wild_types:
            where = f"record {folder!r}: " if folder else ""
            try:
                sequence = encode_wild_type(tokenizer, sequence)[0]
                pairs = parse_positions(args.pairs, len(sequence)) if args.pairs else None
            except ValueError as error:
                raise ValueError(f"{where}{error}") from None
            previous = [name for name in SCAN_OUTPUTS if (output_dir / folder / name).exists()]
            if previous and not args.overwrite:
                raise ValueError(f"{output_dir / folder} holds an earlier scan ({', '.join(previous)}); pass --overwrite to replace it.")
            jobs.append((folder, sequence, pairs))
        processes, threads = plan_processes(args.num_processes, args.threads) if args.device == "cpu" else (1, args.threads)
        configure_threads(threads)
        figures = not args.no_figures
        if figures and importlib.util.find_spec("matplotlib") is None:
            figures = False
            print("lyra-scan: matplotlib is not installed, writing CSV files only (pip install lyra-hf[plot] for figures).", file=sys.stderr)
        for folder, sequence, pairs in jobs:
            result = scan(
                models, tokenizer, sequence, pairs=pairs, top_k=args.top_k, target=args.target, batch_size=args.batch_size, device=args.device, processes=processes
            )
            written = write_result(result, output_dir / folder, mutant_letters(tokenizer), figures, args.heatmap)
            doubles = len(result.pairs) if result.pairs is not None else 0
            print(f"lyra-scan: {folder or 'sequence'}: {len(result.singles):,} single and {doubles:,} double mutants -> {', '.join(map(str, written))}")


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
