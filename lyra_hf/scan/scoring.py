"""Scoring mutants: the wild type's checks and encoding, batches of mutants grouped by the positions they change, and
`score_group`, which scores one batch by every model of an ensemble, incrementally from the wild type's cached
activations (`lyra_hf.incremental`) where the model allows, else by full forward passes of token ids."""

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cpu import WorkerPool, cpu_batch_tokens
from ..data.checks import check_length_read
from ..incremental import IncrementalScorer
from ..tasks import task_of


def target_columns(model, target: str | int | None) -> tuple[list[str], int | None]:
    """The score columns' names, and for classifiers the index of the class whose probability is the score (default:
    the last class, the positive one of a binary classifier)."""
    config = model.config
    names = [str(config.id2label[index]) for index in range(config.num_labels)]
    if task_of(config).numeric_labels:
        if target is not None:
            raise ValueError(
                f"--target {target!r}: it names a classifier's class, and this model is a regression of "
                f"{', '.join(names)}, all of which the scan scores."
            )
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
        raise ValueError(
            "Token-classification checkpoints are not supported: a scan scores whole sequences, use a sequence "
            "regression or classification checkpoint."
        )


def mutant_letters(tokenizer) -> str:
    """The letters a scan substitutes: the alphabet's residues, without X (any amino acid) and, in a nucleotide
    alphabet, N (any base)."""
    ambiguous = "XN" if set(tokenizer.letters) <= set("ACGTUN") else "X"
    return "".join(letter for letter in tokenizer.letters if letter not in ambiguous)


def encode_wild_type(tokenizer, sequence: str, config=None) -> tuple[str, torch.Tensor, list[int]]:
    """The compact sequence, its token ids, and the 0-based positions that can be mutated (padding characters are
    kept as padding); with the model's `config`, a length its per-position terms cannot read is refused."""
    sequence = "".join(sequence.split())
    if not sequence:
        raise ValueError("The wild-type sequence is empty.")
    if config is not None:
        check_length_read(len(sequence), config, "The wild-type sequence")
    letters = tokenizer.letters
    padding = getattr(tokenizer, "padding_characters", "")
    for position, character in enumerate(sequence, 1):
        if character.upper() not in letters and character.upper() not in padding:
            raise ValueError(
                f"Wild-type letter {character!r} at position {position} is not in the model's alphabet {letters!r}."
            )
    input_ids = torch.tensor(tokenizer(sequence)["input_ids"])
    if len(input_ids) != len(sequence):
        raise ValueError("The tokenizer adds special tokens; a scan needs one token per residue.")
    mutable = [index for index, character in enumerate(sequence) if character.upper() in letters]
    if not mutable:
        raise ValueError(
            f"The wild-type sequence {sequence[:20]!r} holds only padding characters: no residue to mutate."
        )
    return sequence.upper(), input_ids, mutable


# Mutants per incremental batch on a CPU, and the fewest positions a batch of a short sequence takes, where each
# batch's fixed cost (about 1 ms of small operations) would dominate (BENCHMARKS.md, "Incremental batch size"); at
# most 8 x `cpu_batch_tokens` positions, so long sequences stay within memory.
CPU_INCREMENTAL_BATCH = 128
CPU_INCREMENTAL_POSITIONS = 24_000


def auto_batch_size(model, length: int, device: torch.device, incremental: bool = False) -> int:
    """Mutants per batch: activations within about a quarter of free memory on a GPU; on a CPU, `cpu_batch_tokens` of
    the model's width (for incremental scoring `CPU_INCREMENTAL_BATCH`, or `CPU_INCREMENTAL_POSITIONS` positions for
    short sequences)."""
    hidden = getattr(model.config, "hidden_size", 64)
    if device.type != "cuda":
        if incremental:
            return max(
                1,
                min(
                    max(CPU_INCREMENTAL_BATCH, CPU_INCREMENTAL_POSITIONS // length),
                    8 * cpu_batch_tokens(hidden) // length,
                ),
            )
        return max(1, cpu_batch_tokens(hidden) // length)
    bytes_per_sequence = 4 * length * hidden * 16  # the widest intermediate (PGC 4d channels, FFT buffers) with margin
    return int(max(1, min(4096, torch.cuda.mem_get_info(device)[0] // 4 // bytes_per_sequence)))


def scoring_state(
    models: list, wild_ids: torch.Tensor, attention_mask: torch.Tensor, device: torch.device, class_index: int | None
) -> dict:
    """What `score_group` needs, shared with worker processes: the models, the wild type, and per model an
    `IncrementalScorer` holding the wild type's activations (None where a model needs full forward passes)."""
    scorers = [
        IncrementalScorer(model, wild_ids, attention_mask) if IncrementalScorer.unsupported(model) is None else None
        for model in models
    ]
    return {
        "models": models,
        "scorers": scorers,
        "wild_ids": wild_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "device": device,
        "class_index": class_index,
    }


def scoring_method(state: dict) -> str:
    """How the mutants are scored, for the log."""
    reasons = [
        IncrementalScorer.unsupported(model)
        for model, scorer in zip(state["models"], state["scorers"])
        if scorer is None
    ]
    return (
        f"full forward passes ({reasons[0]})"
        if reasons
        else "incremental (exact, from the wild type's cached activations)"
    )


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


def substitution_table(
    sites: list[tuple[int, ...]], choices: dict[int, list[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def submit_sites(
    workers: WorkerPool,
    sites: np.ndarray,
    letters: np.ndarray,
    real: np.ndarray,
    letter_ids: torch.Tensor,
    batch_size: int,
    progress=None,
) -> Callable[[], np.ndarray]:
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


def score_sites(
    workers: WorkerPool,
    sites: np.ndarray,
    letters: np.ndarray,
    real: np.ndarray,
    letter_ids: torch.Tensor,
    batch_size: int,
    description: str,
    progress: bool = True,
) -> np.ndarray:
    """`submit_sites`, waited for, with a progress bar."""
    with tqdm(total=real.size, desc=description, unit=" mutants", disable=not progress or None, leave=False) as bar:
        return submit_sites(workers, sites, letters, real, letter_ids, batch_size, bar)()
