"""`scan`: every single mutant of a wild type and the double mutants at chosen positions, as tables with their
epistasis; `scan_all_pairs`: every double mutant, streamed to Parquet (`lyra_hf.scan.pairs`)."""

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from ..checkpoints import member_columns
from ..cpu import WorkerPool
from .pairs import write_pair_map
from .scoring import (
    auto_batch_size,
    check_model,
    encode_wild_type,
    mutant_letters,
    score_group,
    score_sites,
    scoring_method,
    scoring_state,
    substitution_table,
    target_columns,
)


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


@dataclass
class WildType:
    """A wild type ready to scan: its letters, token ids, the 0-based positions that can change and, per position,
    the letter indices (into `letters`) that can replace it."""

    sequence: str
    ids: torch.Tensor
    mutable: list[int]
    letters: str
    letter_ids: torch.Tensor
    choices: dict[int, list[int]]

    @classmethod
    def encode(cls, tokenizer, sequence: str, model=None) -> "WildType":
        """`sequence` to scan; with `model`, without the substitutions its prior (if it has one) has no score for,
        which are named in one line on stderr (a prior from an alignment has none where the query has an insertion)."""
        sequence, ids, mutable = encode_wild_type(tokenizer, sequence, getattr(model, "config", None))
        letters = mutant_letters(tokenizer)
        letter_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(letters)))
        replacing = {
            position: [index for index, token in enumerate(letter_ids.tolist()) if token != int(ids[position])]
            for position in mutable
        }
        prior = getattr(model, "prior", None)
        if prior is not None:
            scores = prior.scores(torch.tensor(mutable)[:, None], letter_ids[None, :])  # (mutable positions, letters)
            unscored = {
                position: set(torch.nonzero(row.isnan()).flatten().tolist()) for position, row in zip(mutable, scores)
            }
            if left_out := sorted(
                position + 1 for position, indices in unscored.items() if indices & set(replacing[position])
            ):
                shown = ", ".join(map(str, left_out[:10])) + (", ..." if len(left_out) > 10 else "")
                print(
                    f"lyra-hf: the model's prior has no score for some substitutions at position(s) {shown}; they are "
                    "left out.",
                    file=sys.stderr,
                )
            replacing = {
                position: [index for index in choices if index not in unscored[position]]
                for position, choices in replacing.items()
            }
        return cls(
            sequence,
            ids,
            mutable,
            letters,
            letter_ids,
            {position: choices for position, choices in replacing.items() if choices},
        )

    def attention_mask(self) -> torch.Tensor:
        """Padding characters stay padding (attention mask 0), as lyra-predict reads them."""
        mask = torch.zeros(len(self.ids), dtype=torch.long)
        mask[self.mutable] = 1
        return mask


def parse_positions(spec: str, length: int, flag: str = "--pairs", minimum: int = 2) -> list[int]:
    """`"10-20,45,47"` -> 1-based positions, checked against the sequence length; at least `minimum` of them."""
    positions = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            first, _, last = part.partition("-")
            first, last = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"{flag}: {part!r} is not a position or a range like 10-20.") from None
        if first > last:
            raise ValueError(f"{flag}: the range {part} runs backwards; write it {last}-{first}.")
        if not 1 <= first <= last <= length:
            raise ValueError(f"{flag}: positions {part} are outside the sequence (1-{length}).")
        positions.update(range(first, last + 1))
    if len(positions) < minimum:
        raise ValueError(f"{flag} {spec!r} names {'no position' if minimum == 1 else 'fewer than two positions'}.")
    return sorted(positions)


def score_columns(targets: list[str], **values: np.ndarray) -> dict[str, list[float]]:
    """Columns per target: each of `values` (rows, members, targets) as the members' mean, and its standard deviation
    after it when there are several members (`member_columns`)."""
    columns = {}
    for column, name in enumerate(targets):
        suffix = "" if len(targets) == 1 else f"_{name}"
        for kind, array in values.items():
            columns.update(
                {
                    key: value.tolist()
                    for key, value in member_columns(array[:, :, [column]], [f"{kind}{suffix}"]).items()
                }
            )
    return columns


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
    check_model(models[0])
    device = torch.device(device or next(models[0].parameters()).device)
    for member in models:
        member.eval().to(device)
    targets, class_index = target_columns(models[0], target)
    wild = WildType.encode(tokenizer, sequence, models[0])
    state = scoring_state(models, wild.ids, wild.attention_mask(), device, class_index)
    incremental = None not in state["scorers"]
    batch_size = batch_size or auto_batch_size(models[0], len(wild.ids), device, incremental=incremental)
    if progress:
        print(f"lyra-scan: scoring by {scoring_method(state)}", file=sys.stderr)
    first = wild.mutable[0]
    wild_score = score_group(state, (np.zeros((1, 1), dtype=np.int64) + first, wild.ids[[first]].numpy()[None, None]))
    wild_score = wild_score[0, 0]
    # One pool for the singles and the doubles: its workers keep their memory from one batch to the next.
    with WorkerPool(state, processes) as workers:
        result, single_scores, single_row = score_singles(workers, wild, targets, wild_score, batch_size, progress)
        singles = single_scores[single_row]
        if all_pairs is not None:
            chosen = (
                [position - 1 for position in pairs if position - 1 in wild.choices] if pairs else list(wild.choices)
            )
            result.pairs_file = Path(all_pairs)
            result.pair_summary = write_pair_map(
                workers, result, chosen, wild.choices, singles, wild_score, wild.letter_ids, wild.letters, batch_size,
                result.pairs_file, max_mutants, progress,
            )  # fmt: skip
            return result
        if pairs is None and top_k:
            pairs = strongest_positions(result, single_scores - wild_score, top_k)
        if pairs:
            result.pairs = score_doubles(workers, wild, result, pairs, singles, wild_score, batch_size, progress)
        return result


def score_singles(
    workers: WorkerPool, wild: WildType, targets: list[str], wild_score: np.ndarray, batch_size: int, progress: bool
):
    """The singles' table (a `ScanResult` without pairs), their scores (rows, members, targets) and, per (position,
    letter index), their row (-1: none), which a double mutant's epistasis reads."""
    sites, letters, real = substitution_table([(position,) for position in wild.choices], wild.choices)
    scores = score_sites(workers, sites, letters, real, wild.letter_ids, batch_size, "single mutants", progress)
    positions, letter_indices = np.repeat(sites[:, 0], real.sum(1)), letters[real][:, 0]
    singles = datasets.Dataset.from_dict(
        {
            "position": (positions + 1).tolist(),
            "wild_type": [wild.sequence[position] for position in positions],
            "mutant": [wild.letters[index] for index in letter_indices],
            **score_columns(targets, score=scores, delta=scores - wild_score),
        }
    )
    result = ScanResult(
        wild.sequence,
        targets,
        dict(zip(targets, wild_score.mean(0).tolist())),
        singles,
        members=len(workers.state["models"]),
    )
    row = np.full((len(wild.ids), len(wild.letters)), -1, dtype=np.int64)
    row[positions, letter_indices] = np.arange(len(positions))
    return result, scores, row


def strongest_positions(result: ScanResult, deltas: np.ndarray, top_k: int) -> list[int]:
    """The (at least 2) 1-based positions with the largest |delta| of a single mutant (first target, members' mean)."""
    effect = np.zeros(len(result.sequence))
    np.maximum.at(effect, np.array(result.singles["position"]) - 1, np.abs(deltas[:, :, 0].mean(1)))
    return sorted((np.argsort(-effect, kind="stable")[: max(2, top_k)] + 1).tolist())


def score_doubles(
    workers,
    wild: WildType,
    result: ScanResult,
    pairs: list[int],
    single_scores: np.ndarray,
    wild_score,
    batch_size: int,
    progress: bool,
):
    """Every double mutant at the 1-based `pairs` positions, with its epistasis; `single_scores` by (position, letter
    index)."""
    length = len(wild.ids)
    if any(not 1 <= position <= length for position in pairs):
        raise ValueError(f"Pair positions must lie in 1-{length}, got {pairs}.")
    chosen = [position - 1 for position in pairs if position - 1 in wild.choices]
    sites, letters, real = substitution_table(list(itertools.combinations(chosen, 2)), wild.choices)
    scores = score_sites(workers, sites, letters, real, wild.letter_ids, batch_size, "double mutants", progress)
    empty = np.zeros(0, dtype=np.int64)
    a, b = (np.repeat(sites[:, column], real.sum(1)) if len(sites) else empty for column in (0, 1))
    letter_a, letter_b = (letters[real][:, column] if len(sites) else empty for column in (0, 1))
    epistasis = scores - single_scores[a, letter_a] - single_scores[b, letter_b] + wild_score
    return datasets.Dataset.from_dict(
        {
            "position_a": (a + 1).tolist(),
            "wild_type_a": [wild.sequence[position] for position in a],
            "mutant_a": [wild.letters[index] for index in letter_a],
            "position_b": (b + 1).tolist(),
            "wild_type_b": [wild.sequence[position] for position in b],
            "mutant_b": [wild.letters[index] for index in letter_b],
            **score_columns(result.targets, score=scores, delta=scores - wild_score, epistasis=epistasis),
        }
    )


def scan_all_pairs(
    models, tokenizer, sequence: str, path: str | Path, **options
) -> tuple[datasets.Dataset, dict[str, np.ndarray], ScanResult]:
    """Every double mutant over every pair of positions (or of `pairs=`) streamed to the Parquet file `path`; returns
    it as a `datasets.Dataset` (memory-mapped Arrow built from the file), the position x position summaries
    (`ScanResult.pair_summary`) and the whole `ScanResult` (singles included). `options` as for `scan`."""
    result = scan(models, tokenizer, sequence, all_pairs=path, **options)
    return datasets.Dataset.from_parquet(str(path)), result.pair_summary, result
