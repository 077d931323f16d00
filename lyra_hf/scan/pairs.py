"""Complete pair maps (`lyra-scan --all-pairs`): every double mutant over every pair of positions, scored in chunks and
streamed to one Parquet file, with a position x position summary of the epistasis."""

import itertools
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoints import member_columns
from ..cpu import WorkerPool
from ..outputs import atomic_file
from .scoring import score_group, site_groups, site_tokens, submit_sites, substitution_table


# Sites (position pairs) per chunk of an all-pairs scan: about 90,000 mutants (one Parquet row group) at 19 x 19
# letters; two chunks are in flight, so that the workers score one while this process writes the other.
PAIR_CHUNK_SITES = 256
# --max-mutants' default: every pair of a 56-residue domain (556,000 mutants) runs; a 237-residue protein's 10 million
# ask first.
DEFAULT_MAX_MUTANTS = 2_000_000
SUMMARY_NAMES = ("max_abs_epistasis", "mean_epistasis", "positive_fraction")


def check_pair_count(
    workers: WorkerPool,
    sites: list[tuple[int, int]],
    choices: dict,
    letter_ids: torch.Tensor,
    batch_size: int,
    limit: int,
) -> int:
    """The number of double mutants over `sites`, refused above `limit` with the time they would take: one batch of
    them is timed here (after a warm-up one) and every worker process counted as this fast. A causal model computes a
    double mutant from its second position on, so the batch is of a pair whose second position is the mean one."""
    total = sum(len(choices[a]) * len(choices[b]) for a, b in sites)
    if total <= limit:
        return total
    mean_second = np.mean([b for _, b in sites])
    typical = min(sites, key=lambda site: abs(site[1] - mean_second))
    sample_sites, sample_letters, _ = substitution_table([typical], choices)
    group = next(
        site_groups(sample_sites, site_tokens(workers.state, sample_sites, sample_letters, letter_ids), batch_size)
    )
    score_group(workers.state, group)
    started = time.perf_counter()
    score_group(workers.state, group)
    rate = group[1].shape[0] * group[1].shape[1] / (time.perf_counter() - started) * workers.processes
    seconds = total / rate
    estimate = (
        f"{seconds / 60:,.0f} min"
        if seconds >= 600
        else f"{seconds / 60:.1f} min"
        if seconds >= 60
        else f"{seconds:.0f} s"
    )
    raise ValueError(
        f"--all-pairs would score {total:,} double mutants ({len(sites):,} position pairs): about {estimate} at "
        f"{rate:,.0f} "
        f"mutants/s (one batch timed, x {workers.processes} process(es)); pass --max-mutants {total} (or more) to run "
        "it, "
        "or narrow it with --pairs."
    )


class PairMapWriter:
    """Writes chunks of scored double mutants as Parquet record batches and fills the position x position summaries:
    position_a, wild_type_a, mutant_a, position_b, wild_type_b, mutant_b (letters dictionary-encoded), then score, delta
    and epistasis per target (float32; with an ensemble each followed by its standard deviation over members)."""

    def __init__(self, result, letters: str, single_scores: np.ndarray, wild_score: np.ndarray):
        import pyarrow as pa

        self.pa, self.single_scores, self.wild_score = pa, single_scores, wild_score
        length = len(result.sequence)
        self.summary = {name: np.full((length, length), np.nan) for name in SUMMARY_NAMES}
        # Per target and kind, the columns `member_columns` makes: the members' mean, then with an ensemble their std.
        self.values = [  # (column name, kind, target)
            (f"{kind}{suffix}", kind, target)
            for target, suffix in enumerate(["" if len(result.targets) == 1 else f"_{name}" for name in result.targets])
            for kind in ("score", "delta", "epistasis")
        ]
        statistics = ("", "_std") if result.members > 1 else ("",)
        letter_type = pa.dictionary(pa.int8(), pa.string())
        fields = [("position_a", pa.int32()), ("wild_type_a", letter_type), ("mutant_a", letter_type)]
        fields += [("position_b", pa.int32()), ("wild_type_b", letter_type), ("mutant_b", letter_type)]
        self.schema = pa.schema(
            fields + [(column + statistic, pa.float32()) for column, _, _ in self.values for statistic in statistics]
        )
        alphabet = list(dict.fromkeys(letters + result.sequence))
        self.wild_letters = np.array([alphabet.index(letter) for letter in result.sequence])
        self.mutant_letters = np.array([alphabet.index(letter) for letter in letters])
        self.alphabet = pa.array(alphabet)

    def letter_column(self, indices: np.ndarray):
        return self.pa.DictionaryArray.from_arrays(self.pa.array(indices, self.pa.int8()), self.alphabet)

    def write(
        self, writer, chunk: list[tuple[int, int]], real: np.ndarray, double_letters: np.ndarray, scores: np.ndarray
    ) -> None:
        pa, counts = self.pa, real.sum(1)
        a, b = (np.repeat(np.array(chunk)[:, column], counts) for column in (0, 1))
        letter_a, letter_b = double_letters[real][:, 0], double_letters[real][:, 1]
        single_a, single_b = self.single_scores[a, letter_a], self.single_scores[b, letter_b]
        arrays = {
            "score": scores,
            "delta": scores - self.wild_score,
            "epistasis": scores - single_a - single_b + self.wild_score,
        }
        columns = [
            pa.array(a + 1, pa.int32()),
            self.letter_column(self.wild_letters[a]),
            self.letter_column(self.mutant_letters[letter_a]),
        ]
        columns += [
            pa.array(b + 1, pa.int32()),
            self.letter_column(self.wild_letters[b]),
            self.letter_column(self.mutant_letters[letter_b]),
        ]
        for column, kind, target in self.values:
            columns += [
                pa.array(values.astype(np.float32))
                for values in member_columns(arrays[kind][:, :, [target]], [column]).values()
            ]
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self.summarize(chunk, counts, arrays["epistasis"][:, :, 0].mean(1))

    def summarize(self, chunk: list[tuple[int, int]], counts: np.ndarray, epistasis: np.ndarray) -> None:
        """Per position pair, over its letter pairs: from the members' mean epistasis of the first target."""
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        site_a, site_b = np.array(chunk).T
        for name, reduced in (
            ("max_abs_epistasis", np.maximum.reduceat(np.abs(epistasis), starts)),
            ("mean_epistasis", np.add.reduceat(epistasis, starts) / counts),
            ("positive_fraction", np.add.reduceat((epistasis > 0).astype(np.float64), starts) / counts),
        ):
            self.summary[name][site_a, site_b] = self.summary[name][site_b, site_a] = reduced


def write_pair_map(
    workers: WorkerPool,
    result,
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
    """Score every double mutant over every pair of `chosen` positions (0-based) of `result`'s wild type and stream
    them to a Parquet file (written under a temporary name, renamed when complete; columns of `PairMapWriter`). Memory
    stays bounded: two chunks of `PAIR_CHUNK_SITES` position pairs at a time. `single_scores` is (L, letters,
    members, targets): each single mutant's scores by position and letter index (the wild type's own letters hold no
    single mutant and are never read). Returns the position x position summaries of `ScanResult.pair_summary`."""
    import pyarrow.parquet as pq

    sites = list(itertools.combinations(chosen, 2))
    limit = DEFAULT_MAX_MUTANTS if max_mutants is None else max_mutants
    total = check_pair_count(workers, sites, choices, letter_ids, batch_size, limit)
    pair_map = PairMapWriter(result, letters, single_scores, wild_score)
    with (
        atomic_file(path) as temporary,
        tqdm(total=total, desc="all double mutants", unit=" mutants", disable=not progress or None) as bar,
    ):
        writer = pq.ParquetWriter(temporary, pair_map.schema, compression="zstd")
        try:
            pending = []  # two chunks in flight: the workers score the newer while this process writes the older
            for start in range(0, len(sites), PAIR_CHUNK_SITES):
                chunk = sites[start : start + PAIR_CHUNK_SITES]
                chunk_sites, double_letters, real = substitution_table(chunk, choices)
                pending.append(
                    (
                        chunk,
                        real,
                        double_letters,
                        submit_sites(workers, chunk_sites, double_letters, real, letter_ids, batch_size),
                    )
                )
                if len(pending) == 2:
                    written, written_real, written_letters, scores = pending.pop(0)
                    pair_map.write(writer, written, written_real, written_letters, scores())
                    bar.update(int(written_real.sum()))
            for written, written_real, written_letters, scores in pending:
                pair_map.write(writer, written, written_real, written_letters, scores())
                bar.update(int(written_real.sum()))
        finally:
            writer.close()
    return pair_map.summary
