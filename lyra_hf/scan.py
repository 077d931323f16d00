"""Mutational scanning: score every single mutant and chosen double mutants of a wild type, with epistasis.

    lyra-scan --model runs/fitness/best --sequence MKTAYIAKQR... --pairs 10-20,45 --output-dir scan/

Singles: every position x every other letter of the checkpoint's alphabet, `delta = score - score(wild type)`. Pairs:
all substitution pairs at chosen positions, `epistasis = f(ab) - f(a) - f(b) + f(wt)`. Mutants are built directly as
token ids (no string round trip) and scored in batches by a model in eval mode, which reuses its cached S4D kernels
because every mutant has the wild type's length. Regression checkpoints give one score per target; classifiers give
the probability of one class (`target`). Positions are 1-based everywhere.
"""

import argparse
import importlib.util
import itertools
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from .allocator import retain_freed_memory
from .data import read_fasta
from .outputs import quiet_library_progress_bars, with_default_permissions, write_csv_atomically
from .predict import load_checkpoint


@dataclass
class ScanResult:
    """The tables of one scan. `singles` has columns position, wild_type, mutant, then score and delta (suffixed with
    the target's name when the model has several); `pairs` (or `None`) has position_a, wild_type_a, mutant_a,
    position_b, wild_type_b, mutant_b, score, delta and epistasis."""

    sequence: str
    targets: list[str]
    wild_type_scores: dict[str, float]
    singles: datasets.Dataset
    pairs: datasets.Dataset | None = None


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
    architectures = getattr(model.config, "architectures", None) or [type(model).__name__]
    if any(name.endswith("ForTokenClassification") for name in architectures):
        raise ValueError("Token-classification checkpoints are not supported: a scan scores whole sequences, use a sequence regression or classification checkpoint.")


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
    return sequence.upper(), input_ids, mutable


def auto_batch_size(model, length: int, device: torch.device) -> int:
    """Sequences per batch so that activations stay within about a quarter of free memory (GPU) or 1 GB (CPU)."""
    hidden = getattr(model.config, "hidden_size", 64)
    bytes_per_sequence = 4 * length * hidden * 16  # the widest intermediate (PGC 4d channels, FFT buffers) with margin
    budget = torch.cuda.mem_get_info(device)[0] // 4 if device.type == "cuda" else 2**30
    return int(max(1, min(4096, budget // bytes_per_sequence)))


@torch.no_grad()
def score_ids(model, input_ids: torch.Tensor, class_index: int | None, batch_size: int, device, description: str, progress: bool = True) -> np.ndarray:
    """Scores of a (num_sequences, length) batch of token ids: (num_sequences, num_targets) floats."""
    scores = []
    for start in tqdm(range(0, len(input_ids), batch_size), desc=description, disable=not progress, leave=False):
        batch = input_ids[start : start + batch_size].to(device)
        logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits.float()
        if class_index is not None:
            logits = logits.softmax(-1)[:, class_index : class_index + 1]
        scores.append(logits.cpu().numpy().astype(np.float64))
    return np.concatenate(scores) if scores else np.zeros((0, 1))


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
    model,
    tokenizer,
    sequence: str,
    pairs: list[int] | None = None,
    top_k: int | None = None,
    target: str | int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ScanResult:
    """Score every single mutant of `sequence` and, with `pairs` (1-based positions) or `top_k` (the positions with
    the largest single-mutant effect), every double mutant at those positions."""
    check_model(model)
    device = torch.device(device or next(model.parameters()).device)
    model.eval().to(device)
    targets, class_index = target_columns(model, target)
    sequence, wild_ids, mutable = encode_wild_type(tokenizer, sequence)
    length = len(wild_ids)
    letters = tokenizer.letters
    letter_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(letters)))
    batch_size = batch_size or auto_batch_size(model, length, device)

    wild_score = score_ids(model, wild_ids[None], class_index, 1, device, "wild type", False)[0]
    # Singles: every mutable position x every letter other than the wild type's.
    single_positions, single_letters = [], []
    for position in mutable:
        for letter_index, token_id in enumerate(letter_ids.tolist()):
            if token_id != int(wild_ids[position]):
                single_positions.append(position)
                single_letters.append(letter_index)
    mutants = wild_ids.repeat(len(single_positions), 1)
    mutants[torch.arange(len(single_positions)), torch.tensor(single_positions, dtype=torch.long)] = letter_ids[single_letters]
    single_scores = score_ids(model, mutants, class_index, batch_size, device, "single mutants", progress)
    single_deltas = single_scores - wild_score

    def score_columns(scores, deltas, extra=None):
        columns = {}
        for column, name in enumerate(targets):
            suffix = "" if len(targets) == 1 else f"_{name}"
            columns[f"score{suffix}"] = scores[:, column].tolist()
            columns[f"delta{suffix}"] = deltas[:, column].tolist()
            if extra is not None:
                columns[f"epistasis{suffix}"] = extra[:, column].tolist()
        return columns

    singles = datasets.Dataset.from_dict(
        {
            "position": [position + 1 for position in single_positions],
            "wild_type": [sequence[position] for position in single_positions],
            "mutant": [letters[index] for index in single_letters],
            **score_columns(single_scores, single_deltas),
        }
    )
    result = ScanResult(sequence, targets, dict(zip(targets, wild_score.tolist())), singles)

    if pairs is None and top_k:
        effect = np.zeros(length)
        np.maximum.at(effect, np.array(single_positions), np.abs(single_deltas[:, 0]))
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
        double_scores = score_ids(model, doubles, class_index, batch_size, device, "double mutants", progress)
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
                **score_columns(double_scores, double_scores - wild_score, epistasis),
            }
        )
    return result


# --- figures -----------------------------------------------------------------------------------------------------


def plot(result: ScanResult, output_dir: Path, letters: str) -> list[Path]:
    """PNG figures of the first target: position x letter heatmap of deltas (wild type marked), per-position mean and
    minimum delta, and the strongest epistasis per position pair. Needs matplotlib (`pip install lyra-hf[plot]`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suffix = "" if len(result.targets) == 1 else f"_{result.targets[0]}"
    length = len(result.sequence)
    deltas = np.full((len(letters), length), np.nan)
    for position, mutant, delta in zip(result.singles["position"], result.singles["mutant"], result.singles[f"delta{suffix}"]):
        deltas[letters.index(mutant), position - 1] = delta
    written = []

    figure, axis = plt.subplots(figsize=(max(6, length * 0.18), 4.5))
    limit = np.nanmax(np.abs(deltas)) or 1.0
    extent = (0.5, length + 0.5, len(letters) - 0.5, -0.5)  # 1-based positions on the x axis
    image = axis.imshow(deltas, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest", extent=extent)
    for position, character in enumerate(result.sequence, 1):
        if character in letters:
            axis.plot(position, letters.index(character), marker="o", markersize=2.5, color="black")
    axis.set_yticks(range(len(letters)), list(letters), fontsize=6)
    axis.set_xlabel("position (wild type marked with dots)")
    axis.set_title(f"Single-mutant delta{suffix.replace('_', ' ')}")
    figure.colorbar(image, ax=axis, label="delta")
    written.append(_save(figure, output_dir / "singles_heatmap.png"))

    figure, axis = plt.subplots(figsize=(max(6, length * 0.12), 3.5))
    positions = np.arange(1, length + 1)
    axis.plot(positions, np.nanmean(deltas, axis=0), label="mean delta")
    axis.plot(positions, np.nanmin(deltas, axis=0), label="min delta")
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
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    figure.savefig(temporary, dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    with_default_permissions(temporary)
    os.replace(temporary, path)
    return path


# --- command line ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lyra-scan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", help="the wild-type sequence")
    source.add_argument("--fasta", help="a FASTA file of wild types (one output folder per record)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--pairs", help="positions for the double-mutant scan, e.g. 10-20,45,47 (1-based)")
    parser.add_argument("--top-k", type=int, help="double-mutant scan over the K positions with the largest single effect")
    parser.add_argument("--target", help="class (name or index) whose probability a classifier scores; default: the last")
    parser.add_argument("--batch-size", type=int, help="default: chosen from memory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint")
    parser.add_argument("--no-figures", action="store_true")
    return parser


def write_result(result: ScanResult, output_dir: Path, letters: str, figures: bool) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / "singles.csv"]
    write_csv_atomically(written[0], result.singles.to_dict())
    if result.pairs is not None:
        written.append(output_dir / "pairs.csv")
        write_csv_atomically(written[-1], result.pairs.to_dict())
    if figures:
        written += plot(result, output_dir, letters)
    return written


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet_library_progress_bars()
    retain_freed_memory()
    try:
        if args.pairs and args.top_k:
            raise ValueError("Give --pairs or --top-k, not both.")
        if args.top_k is not None and args.top_k < 2:
            raise ValueError(f"--top-k must be at least 2, got {args.top_k}.")
        tokenizer, model = load_checkpoint(args.model, args.revision)
        check_model(model)
        if args.fasta:
            records = read_fasta(args.fasta)
            wild_types = list(zip(records["id"], records["sequence"]))
        else:
            wild_types = [("", args.sequence)]
        figures = not args.no_figures
        if figures and importlib.util.find_spec("matplotlib") is None:
            figures = False
            print("lyra-scan: matplotlib is not installed, writing CSV files only (pip install lyra-hf[plot] for figures).", file=sys.stderr)
        for name, sequence in wild_types:
            length = len("".join(sequence.split()))
            pairs = parse_positions(args.pairs, length) if args.pairs else None
            result = scan(model, tokenizer, sequence, pairs=pairs, top_k=args.top_k, target=args.target, batch_size=args.batch_size, device=args.device)
            written = write_result(result, Path(args.output_dir) / name, tokenizer.letters, figures)
            print(f"lyra-scan: {name or 'sequence'}: {len(result.singles):,} single and {len(result.pairs) if result.pairs is not None else 0:,} double mutants -> {', '.join(str(path) for path in written)}")
    except (ValueError, OSError, RuntimeError) as error:
        print(f"lyra-scan: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
