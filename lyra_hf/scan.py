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
import importlib.util
import itertools
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from . import cli
from .checkpoints import atomic_file, load_models, locked_output_dir, replacing_outputs, write_csv
from .cpu import WorkerPool, configure_threads, cpu_batch_tokens, plan_processes
from .data import read_table
from .incremental import IncrementalScorer
from .tasks import task_of


SCAN_OUTPUTS = ("singles.csv", "pairs.csv", "singles_heatmap.png", "positions.png", "epistasis.png", "pairs.parquet", "pair_summary.csv", "pair_summary.png")
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
    # From an all-pairs scan (`all_pairs`): the Parquet file of every double mutant, and per position pair (L x L,
    # symmetric, NaN where not scanned) the largest |epistasis|, the mean epistasis and the fraction of positive
    # epistasis over its letter pairs (of the first target, members' mean).
    pairs_file: Path | None = None
    pair_summary: dict[str, np.ndarray] | None = None


def target_columns(model, target: str | int | None) -> tuple[list[str], int | None]:
    """The score columns' names, and for classifiers the index of the class whose probability is the score (default:
    the last class, the positive one of a binary classifier)."""
    config = model.config
    names = [str(config.id2label[index]) for index in range(config.num_labels)]
    if task_of(config).numeric_labels:
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
    if task_of(model.config).labels_per_residue:
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


# Mutants per incremental batch on a CPU. Double mutants of one position pair at L = 237, one thread: 16, 32, 64, 128
# and 361 a batch scored 4,700, 4,500, 4,700, 5,100 and 3,700 mutants/s (noisy); at most 8 x `cpu_batch_tokens`
# positions, so long sequences stay within memory. Short sequences take at least CPU_INCREMENTAL_POSITIONS positions a
# batch, where each batch's fixed cost (about 1 ms of small operations) would dominate: at L = 56 batches of 361 (one
# position pair's double mutants) scored 26,000-29,000 mutants/s against 22,000-24,000 for 128 (alternately, 4 times).
CPU_INCREMENTAL_BATCH = 128
CPU_INCREMENTAL_POSITIONS = 24_000


def auto_batch_size(model, length: int, device: torch.device, incremental: bool = False) -> int:
    """Mutants per batch: activations within about a quarter of free memory on a GPU; on a CPU, `cpu_batch_tokens` of
    the model's width (for incremental scoring `CPU_INCREMENTAL_BATCH`, or `CPU_INCREMENTAL_POSITIONS` positions for
    short sequences)."""
    hidden = getattr(model.config, "hidden_size", 64)
    if device.type != "cuda":
        if incremental:
            return max(1, min(max(CPU_INCREMENTAL_BATCH, CPU_INCREMENTAL_POSITIONS // length), 8 * cpu_batch_tokens(hidden) // length))
        return max(1, cpu_batch_tokens(hidden) // length)
    bytes_per_sequence = 4 * length * hidden * 16  # the widest intermediate (PGC 4d channels, FFT buffers) with margin
    return int(max(1, min(4096, torch.cuda.mem_get_info(device)[0] // 4 // bytes_per_sequence)))


def scoring_state(models: list, wild_ids: torch.Tensor, attention_mask: torch.Tensor, device: torch.device, class_index: int | None) -> dict:
    """What `score_group` needs, shared with worker processes: the models, the wild type, and per model an
    `IncrementalScorer` holding the wild type's activations (None where a model needs full forward passes)."""
    scorers = [IncrementalScorer(model, wild_ids, attention_mask) if IncrementalScorer.unsupported(model) is None else None for model in models]
    return {"models": models, "scorers": scorers, "wild_ids": wild_ids.to(device), "attention_mask": attention_mask.to(device), "device": device, "class_index": class_index}


def scoring_method(state: dict) -> str:
    """How the mutants are scored, for the log."""
    reasons = [IncrementalScorer.unsupported(model) for model, scorer in zip(state["models"], state["scorers"]) if scorer is None]
    return f"full forward passes ({reasons[0]})" if reasons else "incremental (exact, from the wild type's cached activations)"


@torch.no_grad()
def score_group(state: dict, group: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Scores of a group of mutants by every model, (P, M, num_models, num_targets): `group` is (sites (P, k),
    tokens (P, M, k)), mutant (i, j) putting `tokens[i, j]` at the positions `sites[i]` (run in this process or a
    worker; `state` from `scoring_state`)."""
    sites, tokens = (torch.from_numpy(array).to(state["device"]) for array in group)
    scores = []
    for model, scorer in zip(state["models"], state["scorers"]):
        if scorer is not None:
            logits = scorer.score(sites, tokens).flatten(0, 1)
        else:
            count = tokens.shape[0] * tokens.shape[1]
            input_ids = state["wild_ids"].repeat(count, 1)
            positions = sites[:, None].expand(tokens.shape).reshape(count, -1)
            input_ids[torch.arange(count, device=input_ids.device)[:, None], positions] = tokens.reshape(count, -1)
            logits = model(input_ids=input_ids, attention_mask=state["attention_mask"].expand_as(input_ids)).logits
        logits = logits.float()
        if state["class_index"] is not None:
            logits = logits.softmax(-1)[:, state["class_index"] : state["class_index"] + 1]
        scores.append(logits.cpu().numpy().astype(np.float64))
    return np.stack(scores, axis=1).reshape(*tokens.shape[:2], len(scores), -1)


def site_groups(sites: np.ndarray, tokens: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of at most `batch_size` mutants for `score_group`: several whole sites, or one site's mutants in equal
    parts."""
    per_site = tokens.shape[1]
    if per_site >= batch_size:
        part = -(-per_site // -(-per_site // batch_size))  # 361 in batches of 128: 121, 121, 119
        for site in range(len(sites)):
            for start in range(0, per_site, part):
                yield sites[site : site + 1], tokens[site : site + 1, start : start + part]
    else:
        step = max(1, batch_size // per_site)
        for start in range(0, len(sites), step):
            yield sites[start : start + step], tokens[start : start + step]


def substitution_table(sites: list[tuple[int, ...]], choices: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each site (a tuple of positions), every combination of its positions' substitutions (`choices[p]`: the
    letter indices that can replace position p): sites (P, k), letter indices (P, M, k) padded to the longest with -1,
    and a (P, M) mask of the real ones."""
    combinations = [list(itertools.product(*(choices[position] for position in site))) for site in sites]
    per_site = max((len(combos) for combos in combinations), default=0)
    count = len(sites[0]) if sites else 1
    letters = np.full((len(sites), per_site, count), -1, dtype=np.int64)
    for row, combos in enumerate(combinations):
        letters[row, : len(combos)] = combos
    return np.array(sites, dtype=np.int64).reshape(len(sites), count), letters, letters[..., 0] >= 0


def site_tokens(state: dict, sites: np.ndarray, letters: np.ndarray, letter_ids: torch.Tensor) -> np.ndarray:
    """The token ids of `substitution_table`'s letter indices; padding entries put the wild type's own token back (a
    valid mutant whose score is dropped)."""
    wild = state["wild_ids"].cpu().numpy()
    return np.where(letters >= 0, letter_ids.numpy()[np.maximum(letters, 0)], wild[sites][:, None, :])


def submit_sites(workers: WorkerPool, sites: np.ndarray, letters: np.ndarray, real: np.ndarray, letter_ids: torch.Tensor, batch_size: int, progress=None) -> Callable[[], np.ndarray]:
    """Hand every real mutant of `substitution_table`'s sites to the pool at once; returns a function that waits for
    their scores, (num_mutants, num_models, num_targets) in site then letter order (so the caller can work on the
    last results while these are scored). `progress`, a tqdm bar, advances by each batch's mutants."""
    state = workers.state
    groups = list(site_groups(sites, site_tokens(state, sites, letters, letter_ids), batch_size))
    results = workers.map(score_group, groups)
    width = (len(state["models"]), 1 if state["class_index"] is not None else state["models"][0].config.num_labels)

    def scores() -> np.ndarray:
        collected = []
        for group, result in zip(groups, results):
            collected.append(result.reshape(-1, *width))
            if progress is not None:
                progress.update(result.shape[0] * result.shape[1])
        if not collected:
            return np.zeros((0, *width))
        # Parts of one site come back as (1, m) pieces: join them per site before dropping the padding entries.
        return np.concatenate(collected).reshape(len(sites), -1, *width)[real]

    return scores


def score_sites(workers: WorkerPool, sites: np.ndarray, letters: np.ndarray, real: np.ndarray, letter_ids: torch.Tensor, batch_size: int, description: str, progress: bool = True) -> np.ndarray:
    """`submit_sites`, waited for, with a progress bar."""
    with tqdm(total=real.size, desc=description, unit=" mutants", disable=not progress, leave=False) as bar:
        return submit_sites(workers, sites, letters, real, letter_ids, batch_size, bar)()


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
    all_pairs: str | Path | None = None,
    max_mutants: int | None = None,
) -> ScanResult:
    """Score every single mutant of `sequence` and, with `pairs` (1-based positions) or `top_k` (the positions with
    the largest single-mutant effect), every double mutant at those positions; with `processes` > 1, in that many
    single-threaded worker processes (same scores). `models` is one model or an ensemble's members (`load_models`).

    With `all_pairs` (a Parquet file to write), every double mutant over every pair of positions (of `pairs`, when
    given) is streamed to that file instead (see `write_pair_map`), refused beyond `max_mutants` mutants."""
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
    # Padding characters stay padding (attention mask 0), as lyra-predict reads them.
    attention_mask = torch.zeros(length, dtype=torch.long)
    attention_mask[mutable] = 1
    choices = {position: [index for index, token_id in enumerate(letter_ids.tolist()) if token_id != int(wild_ids[position])] for position in mutable}

    state = scoring_state(models, wild_ids, attention_mask, device, class_index)
    batch_size = batch_size or auto_batch_size(model, length, device, incremental=None not in state["scorers"])
    if progress:
        print(f"lyra-scan: scoring by {scoring_method(state)}", file=sys.stderr)
    wild_score = score_group(state, (np.zeros((1, 1), dtype=np.int64) + mutable[0], wild_ids[[mutable[0]]].numpy()[None, None]))[0, 0]

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

    # One pool for the singles and the doubles: its workers keep their memory from one batch to the next.
    with WorkerPool(state, processes) as workers:
        single_sites, single_letters, real = substitution_table([(position,) for position in mutable], choices)
        single_scores = score_sites(workers, single_sites, single_letters, real, letter_ids, batch_size, "single mutants", progress)
        single_deltas = single_scores - wild_score
        single_positions = np.repeat(single_sites[:, 0], real.sum(1))
        single_letter_indices = single_letters[real][:, 0]
        singles = datasets.Dataset.from_dict(
            {
                "position": (single_positions + 1).tolist(),
                "wild_type": [sequence[position] for position in single_positions],
                "mutant": [letters[index] for index in single_letter_indices],
                **score_columns(score=single_scores, delta=single_deltas),
            }
        )
        result = ScanResult(sequence, targets, dict(zip(targets, wild_score.mean(0).tolist())), singles, members=len(models))
        # The singles' row of each (position, letter index): what a double mutant's epistasis subtracts.
        single_row = np.full((length, len(letters)), -1, dtype=np.int64)
        single_row[single_positions, single_letter_indices] = np.arange(len(single_positions))

        if all_pairs is not None:
            chosen = [position - 1 for position in pairs if position - 1 in choices] if pairs else list(choices)
            result.pairs_file = Path(all_pairs)
            result.pair_summary = write_pair_map(
                workers, result, chosen, choices, single_scores[single_row], wild_score, letter_ids, letters, batch_size, result.pairs_file, max_mutants, progress
            )
            return result
        if pairs is None and top_k:
            effect = np.zeros(length)
            np.maximum.at(effect, single_positions, np.abs(single_deltas[:, :, 0].mean(1)))
            pairs = sorted((np.argsort(-effect, kind="stable")[: max(2, top_k)] + 1).tolist())
        if pairs:
            if any(not 1 <= position <= length for position in pairs):
                raise ValueError(f"Pair positions must lie in 1-{length}, got {pairs}.")
            chosen = [position - 1 for position in pairs if position - 1 in choices]
            double_sites, double_letters, real = substitution_table(list(itertools.combinations(chosen, 2)), choices)
            double_scores = score_sites(workers, double_sites, double_letters, real, letter_ids, batch_size, "double mutants", progress)
            a, b = (np.repeat(double_sites[:, column], real.sum(1)) if len(double_sites) else np.zeros(0, dtype=np.int64) for column in (0, 1))
            letter_a, letter_b = (double_letters[real][:, column] if len(double_sites) else np.zeros(0, dtype=np.int64) for column in (0, 1))
            single_a, single_b = single_scores[single_row[a, letter_a]], single_scores[single_row[b, letter_b]]
            epistasis = double_scores - single_a - single_b + wild_score
            result.pairs = datasets.Dataset.from_dict(
                {
                    "position_a": (a + 1).tolist(),
                    "wild_type_a": [sequence[position] for position in a],
                    "mutant_a": [letters[index] for index in letter_a],
                    "position_b": (b + 1).tolist(),
                    "wild_type_b": [sequence[position] for position in b],
                    "mutant_b": [letters[index] for index in letter_b],
                    **score_columns(score=double_scores, delta=double_scores - wild_score, epistasis=epistasis),
                }
            )
        return result


# Sites (position pairs) per chunk of an all-pairs scan: about 90,000 mutants (one Parquet row group) at 19 x 19
# letters; two chunks are in flight, so that the workers score one while this process writes the other.
PAIR_CHUNK_SITES = 256
# --max-mutants' default: every pair of a 56-residue domain (556,000 mutants) runs; a 237-residue protein's 10 million
# ask first.
DEFAULT_MAX_MUTANTS = 2_000_000
SUMMARY_NAMES = ("max_abs_epistasis", "mean_epistasis", "positive_fraction")


def write_pair_map(
    workers: WorkerPool,
    result: ScanResult,
    chosen: list[int],
    choices: dict[int, list[int]],
    single_scores: np.ndarray,
    wild_score: np.ndarray,
    letter_ids: torch.Tensor,
    letters: str,
    batch_size: int,
    path: Path,
    max_mutants: int | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Score every double mutant over every pair of `chosen` positions (0-based) and stream them to a Parquet file
    (written under a temporary name, renamed when complete): position_a, wild_type_a, mutant_a, position_b,
    wild_type_b, mutant_b, then score, delta and epistasis per target (float32; with an ensemble each followed by its
    standard deviation over members). Memory stays bounded: two chunks of `PAIR_CHUNK_SITES` position pairs at a time.
    `single_scores` is (L, letters, members, targets): each single mutant's scores by position and letter index (the
    wild type's own letters hold no single mutant and are never read). Returns the position x position summaries of
    `ScanResult.pair_summary`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sites = list(itertools.combinations(chosen, 2))
    total = sum(len(choices[a]) * len(choices[b]) for a, b in sites)
    limit = DEFAULT_MAX_MUTANTS if max_mutants is None else max_mutants
    if total > limit:
        # The estimate times one batch of these double mutants here (after a first, warm-up one) and counts every
        # worker process as this fast. A causal model computes a double mutant from its second position on, so the
        # batch is of a pair whose second position is the mean one.
        mean_second = np.mean([b for _, b in sites])
        typical = min(sites, key=lambda site: abs(site[1] - mean_second))
        sample_sites, sample_letters, _ = substitution_table([typical], choices)
        group = next(site_groups(sample_sites, site_tokens(workers.state, sample_sites, sample_letters, letter_ids), batch_size))
        score_group(workers.state, group)
        started = time.perf_counter()
        score_group(workers.state, group)
        rate = group[1].shape[0] * group[1].shape[1] / (time.perf_counter() - started) * workers.processes
        seconds = total / rate
        estimate = f"{seconds / 60:,.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
        raise ValueError(
            f"--all-pairs would score {total:,} double mutants ({len(sites):,} position pairs): about {estimate} at {rate:,.0f} "
            f"mutants/s (one batch timed, x {workers.processes} process(es)); pass --max-mutants {total} (or more) to run it, "
            "or narrow it with --pairs."
        )
    length, members = len(result.sequence), result.members
    summary = {name: np.full((length, length), np.nan) for name in SUMMARY_NAMES}
    letter_type = pa.dictionary(pa.int8(), pa.string())
    fields = [("position_a", pa.int32()), ("wild_type_a", letter_type), ("mutant_a", letter_type)]
    fields += [("position_b", pa.int32()), ("wild_type_b", letter_type), ("mutant_b", letter_type)]
    values = []  # (column, kind, target, statistic over members)
    for target, name in enumerate(result.targets):
        suffix = "" if len(result.targets) == 1 else f"_{name}"
        for kind in ("score", "delta", "epistasis"):
            values.append((f"{kind}{suffix}", kind, target, np.mean))
            if members > 1:
                values.append((f"{kind}{suffix}_std", kind, target, np.std))
    schema = pa.schema(fields + [(column, pa.float32()) for column, *_ in values])
    alphabet = list(dict.fromkeys(letters + result.sequence))
    wild_letters = np.array([alphabet.index(letter) for letter in result.sequence])
    mutant_letter_index = np.array([alphabet.index(letter) for letter in letters])
    alphabet = pa.array(alphabet)

    def letter_column(indices: np.ndarray) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int8()), alphabet)

    def write(chunk: list[tuple[int, int]], real: np.ndarray, double_letters: np.ndarray, scores: np.ndarray) -> None:
        counts = real.sum(1)
        a, b = (np.repeat(np.array(chunk)[:, column], counts) for column in (0, 1))
        letter_a, letter_b = double_letters[real][:, 0], double_letters[real][:, 1]
        single_a, single_b = single_scores[a, letter_a], single_scores[b, letter_b]
        arrays = {"score": scores, "delta": scores - wild_score, "epistasis": scores - single_a - single_b + wild_score}
        columns = [pa.array(a + 1, pa.int32()), letter_column(wild_letters[a]), letter_column(mutant_letter_index[letter_a])]
        columns += [pa.array(b + 1, pa.int32()), letter_column(wild_letters[b]), letter_column(mutant_letter_index[letter_b])]
        for _, kind, target, statistic in values:
            columns.append(pa.array(statistic(arrays[kind][:, :, target], axis=1).astype(np.float32)))
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
        # Per position pair, over its letter pairs: the members' mean epistasis of the first target.
        epistasis = arrays["epistasis"][:, :, 0].mean(1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        site_a, site_b = np.array(chunk).T
        for name, reduced in (
            ("max_abs_epistasis", np.maximum.reduceat(np.abs(epistasis), starts)),
            ("mean_epistasis", np.add.reduceat(epistasis, starts) / counts),
            ("positive_fraction", np.add.reduceat((epistasis > 0).astype(np.float64), starts) / counts),
        ):
            summary[name][site_a, site_b] = summary[name][site_b, site_a] = reduced

    with atomic_file(path) as temporary, tqdm(total=total, desc="all double mutants", unit=" mutants", disable=not progress) as bar:
        writer = pq.ParquetWriter(temporary, schema, compression="zstd")
        try:
            pending = []
            for start in range(0, len(sites), PAIR_CHUNK_SITES):
                chunk = sites[start : start + PAIR_CHUNK_SITES]
                chunk_sites, double_letters, real = substitution_table(chunk, choices)
                pending.append((chunk, real, double_letters, submit_sites(workers, chunk_sites, double_letters, real, letter_ids, batch_size)))
                if len(pending) == 2:
                    chunk, real, double_letters, scores = pending.pop(0)
                    write(chunk, real, double_letters, scores())
                    bar.update(int(real.sum()))
            for chunk, real, double_letters, scores in pending:
                write(chunk, real, double_letters, scores())
                bar.update(int(real.sum()))
        finally:
            writer.close()
    return summary


def scan_all_pairs(models, tokenizer, sequence: str, path: str | Path, **options) -> tuple[datasets.Dataset, dict[str, np.ndarray], ScanResult]:
    """Every double mutant over every pair of positions (or of `pairs=`) streamed to the Parquet file `path`; returns
    it as a `datasets.Dataset` (memory-mapped Arrow built from the file), the position x position summaries
    (`ScanResult.pair_summary`) and the whole `ScanResult` (singles included). `options` as for `scan`."""
    result = scan(models, tokenizer, sequence, all_pairs=path, **options)
    return datasets.Dataset.from_parquet(str(path)), result.pair_summary, result


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

    if result.pair_summary is not None:
        strongest = result.pair_summary["max_abs_epistasis"]
        scanned = np.flatnonzero(~np.isnan(strongest).all(0))
        if len(scanned):
            matrix = strongest[np.ix_(scanned, scanned)]
            figure, axis = plt.subplots(figsize=(6, 5.2))
            extent = (scanned[0] + 0.5, scanned[-1] + 1.5, scanned[-1] + 1.5, scanned[0] + 0.5)  # 1-based positions
            colors = matplotlib.colormaps["magma"].with_extremes(bad="lightgrey")  # the diagonal: no pair
            image = axis.imshow(matrix, cmap=colors, vmin=0, interpolation="nearest", extent=extent if len(scanned) == scanned[-1] - scanned[0] + 1 else None)
            axis.set_xlabel("position")
            axis.set_ylabel("position")
            axis.set_title("Largest |epistasis| per position pair")
            figure.colorbar(image, ax=axis, label="max |epistasis| over letter pairs")
            written.append(_save(figure, output_dir / "pair_summary.png"))
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
    parser.add_argument("--output-dir", required=True, help="folder for the tables and figures (one subfolder per FASTA record)")
    parser.add_argument("--pairs", help="positions for the double-mutant scan, e.g. 10-20,45,47 (1-based)")
    parser.add_argument("--top-k", type=cli.bounded(int, minimum=2), help="double-mutant scan over the K positions with the largest single effect")
    parser.add_argument(
        "--all-pairs", action="store_true", help="every double mutant over every pair of positions (or of --pairs), to pairs.parquet, with a position x position summary"
    )
    parser.add_argument(
        "--max-mutants", type=cli.POSITIVE_INT, help=f"--all-pairs refuses to score more double mutants than this, naming the count and the time it would take (default {DEFAULT_MAX_MUTANTS:,})"
    )
    parser.add_argument("--target", help="class (name or index) whose probability a classifier scores; default: the last")
    parser.add_argument("--batch-size", type=cli.POSITIVE_INT, help=f"default: about {cpu_batch_tokens(64):,} tokens a batch on a CPU (at width 64; fewer for wider models), a quarter of free memory on a GPU")
    parser.add_argument("--device", type=cli.device, default="cuda" if torch.cuda.is_available() else "cpu", help="where the model runs")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only (no matplotlib needed)")
    parser.add_argument("--heatmap", choices=("delta", "std"), default="delta", help="what the single-mutant heatmap shows: the delta, or (ensembles) its standard deviation over members")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier scan in the output folders")
    cli.add_cpu_flags(parser)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pairs and args.top_k:
        parser.error("give --pairs or --top-k, not both")
    if args.all_pairs and args.top_k:
        parser.error("--all-pairs scans every pair of positions (or of --pairs); --top-k does not apply")
    if args.max_mutants is not None and not args.all_pairs:
        parser.error(f"--max-mutants {args.max_mutants} limits --all-pairs; give --all-pairs or drop it")


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
            started = time.perf_counter()
            # Everything is written into a temporary folder and moved into place once complete: an interrupted scan
            # (an all-pairs one included) leaves no partial output, and an earlier scan's files stay until then.
            with replacing_outputs(output_dir / folder, SCAN_OUTPUTS) as (temporary, written):
                result = scan(
                    models, tokenizer, sequence, pairs=pairs, top_k=args.top_k, target=args.target, batch_size=args.batch_size, device=args.device,
                    processes=processes, all_pairs=temporary / "pairs.parquet" if args.all_pairs else None, max_mutants=args.max_mutants,
                )  # fmt: skip
                write_tables(result, temporary, mutant_letters(tokenizer), figures, args.heatmap)
            doubles = len(result.pairs) if result.pairs is not None else 0
            if result.pairs_file is not None:
                import pyarrow.parquet as pq

                doubles = pq.ParquetFile(output_dir / folder / "pairs.parquet").metadata.num_rows
            seconds = time.perf_counter() - started
            mutants = len(result.singles) + doubles
            print(
                f"lyra-scan: {folder or 'sequence'}: {len(result.singles):,} single and {doubles:,} double mutants in {seconds:.1f} s "
                f"({mutants / seconds:,.0f} mutants/s) -> {', '.join(map(str, written))}"
            )


def main(argv=None) -> int:
    return cli.main(build_parser(), check_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
