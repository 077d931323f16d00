"""`design()`: score a design space (or a library of candidates) with a model or a seed ensemble and choose the next
batch to measure; what `lyra-design` runs."""

import sys
from dataclasses import dataclass

import datasets
import numpy as np
import torch

from ..checkpoints import member_columns
from ..cli import POSITIVE_INT, bounded, comma_separated, option
from ..cpu import WorkerPool
from ..scan.mutants import WildType
from ..scan.scoring import auto_batch_size, check_model, scoring_state, target_columns
from .expressions import parse_constraint, parse_objective
from .scoring import enumerate_space, score_candidates
from .search import beam_search, beam_width
from .selection import Acquisition, DiversityRules, choose, per_member, thompson_turns
from .space import DesignSpace, Mutations, build_space


@dataclass
class DesignOptions:
    """What to design and how to choose: the flags of `lyra-design` other than its files (the run_glue.py habit)."""

    positions: str | None = option(help="1-based positions that may change, e.g. 39-42,60 (default: every position)")
    letters: str | None = option(
        help="letters they may take: AVILMFWY for all, 39:AG for some, comma-separated (default: the alphabet's)"
    )
    max_mutations: int = option(2, "the most positions a design changes at once", type=POSITIVE_INT)
    num_designs: int = option(96, "designs to choose (one 96-well plate by default)", type=POSITIVE_INT)
    objective: str | None = option(
        help="with several targets, how to weigh them, e.g. 'binding + 0.5*expression' (targets, numbers, + - *)"
    )
    acquisition: str = option(
        "mean", "what ranks candidates: mean, ucb:BETA (mean + BETA x std over ensemble members) or thompson"
    )
    constraint: list[str] = option(
        [],
        "conditions on the predicted targets, comma-separated, e.g. 'expression>0' (targets, numbers, + - * > <)",
        type=comma_separated,
    )
    min_distance: int = option(1, "the least Hamming distance between two designs", type=POSITIVE_INT)
    max_per_site: int | None = option(help="the most designs that change one position", type=POSITIVE_INT)
    max_candidates: int = option(
        200_000, "score every candidate up to this many; a larger space is searched (--search)", type=POSITIVE_INT
    )
    search: str = option(
        "auto",
        "exhaustive (refused above --max-candidates), beam (beam search over accumulated mutations) or auto: "
        "exhaustive when the space fits",
        choices=("auto", "exhaustive", "beam"),
    )
    seed: int = option(0, "seed of Thompson sampling's draws of members", type=bounded(int, minimum=0))


@dataclass
class DesignResult:
    """The chosen batch (`designs`, best first) and every scored candidate with its objective (`candidates`)."""

    designs: datasets.Dataset
    candidates: dict[str, list]
    chosen: list[int]
    space_size: int
    smaller_batch_reason: str | None = None  # why fewer than --num-designs were chosen (None: as many as asked)


def library_mutations(space: DesignSpace, sequences: list[str]) -> list[Mutations]:
    """A library's sequences as substitutions of the wild type, each checked (length, letters)."""
    wild, letters = space.wild.sequence, {letter: index for index, letter in enumerate(space.wild.letters)}
    candidates = []
    for row, sequence in enumerate(sequences, 1):
        sequence = sequence.strip().upper()
        if len(sequence) != len(wild):
            raise ValueError(
                f"--candidates row {row}: {len(sequence)} letters where the wild type has {len(wild)}; candidates are "
                "substitution variants of it."
            )
        changes = [
            (position, letter) for position, (letter, original) in enumerate(zip(sequence, wild)) if letter != original
        ]
        unknown = [letter for _, letter in changes if letter not in letters]
        if unknown:
            raise ValueError(
                f"--candidates row {row}: {unknown[0]!r} is not a letter the model scores ({space.wild.letters})."
            )
        candidates.append(tuple((position, letters[letter]) for position, letter in changes))
    return candidates


def check_choice(options: DesignOptions, models: list, targets: list[str], available: int) -> None:
    """The refusals that need no scores: an acquisition that needs an ensemble, a batch larger than the space."""
    acquisition = Acquisition.parse(options.acquisition)
    if acquisition.kind != "mean" and len(models) == 1:
        raise ValueError(
            f"--acquisition {options.acquisition} reads the spread of a seed ensemble's members (lyra-train --ensemble "
            "K); this is one model."
        )
    if options.objective is None and len(targets) > 1:
        raise ValueError(
            f"the model predicts {len(targets)} targets ({', '.join(targets)}); --objective says how to weigh them, "
            f"e.g. '{targets[0]} + 0.5*{targets[1]}'."
        )
    if available == 0:
        raise ValueError("every candidate of the design space is a sequence of --exclude: nothing is left to propose.")


def design(
    models,
    tokenizer,
    sequence: str,
    options: DesignOptions,
    library: list[str] | None = None,
    measured: list[str] | None = None,
    processes: int = 1,
    progress: bool = True,
) -> DesignResult:
    """Score every candidate of the space `options` describe around `sequence` (or the `library`'s sequences; or, for a
    space above `max_candidates`, those a beam search reaches) with a model or an ensemble's members, and choose
    `options.num_designs` of them, never one of `measured`."""
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    check_model(models[0])
    targets, class_index = target_columns(models[0], None)
    wild = WildType.encode(tokenizer, sequence, models[0])
    space = build_space(wild, options.positions, options.letters, options.max_mutations)
    measured_set = {entry.strip().upper() for entry in measured or []}
    objective = parse_objective(options.objective or targets[0], targets)
    constraints = [parse_constraint(text, targets) for text in options.constraint if text.strip()]
    Acquisition.parse(options.acquisition)  # refused before any work
    exhaustive = library is not None or check_search(options, space)
    enumerated = enumerate_space(space) if exhaustive else None
    candidates = library_mutations(space, library) if library is not None else enumerated
    available = space.size() if candidates is None else len(candidates)
    if candidates is not None:
        available -= sum(space.sequence(mutations) in measured_set for mutations in candidates)
    check_choice(options, models, targets, available)

    def rank(predictions: np.ndarray) -> np.ndarray:
        values = Acquisition.parse(options.acquisition).values(per_member(predictions, targets, objective))
        return np.where(constraints_hold(predictions, targets, constraints), values, -np.inf)

    candidates, predictions = score_space(models, space, candidates, rank, class_index, options, processes, progress)
    sequences = [space.sequence(mutations) for mutations in candidates]
    unmeasured = np.array(
        [bool(mutations) and seq not in measured_set for mutations, seq in zip(candidates, sequences)]
    )
    eligible = constraints_hold(predictions, targets, constraints) & unmeasured
    check_constraints(options, predictions, targets, constraints, unmeasured)
    objective_values = per_member(predictions, targets, objective)
    check_finite(options, objective_values, sequences)
    chosen, ranked_by = choose_designs(options, objective_values, candidates, eligible)
    reason = smaller_batch_reason(options, unmeasured, eligible) if len(chosen) < options.num_designs else None
    if reason and progress:
        print(f"lyra-design: {len(chosen)} of {options.num_designs} designs: {reason}.", file=sys.stderr)
    columns = design_columns(space, candidates, sequences, predictions, targets, objective_values, ranked_by)
    designs = {"rank": list(range(1, len(chosen) + 1))}
    designs.update({name: [values[index] for index in chosen] for name, values in columns.items()})
    designs["distance_to_measured"] = nearest_distances(designs["sequence"], measured_set)
    size = space.size() if library is None else len(candidates)
    return DesignResult(datasets.Dataset.from_dict(designs), columns, chosen, size, reason)


def score_space(models, space, candidates, rank, class_index, options: DesignOptions, processes: int, progress: bool):
    """The candidates and their predictions (candidates, members, targets): those given, each scored exactly, or
    (`candidates` None) those a beam search reaches, ranked by `rank`."""
    for model in models:
        model.eval()
    device = next(models[0].parameters()).device
    state = scoring_state(models, space.wild.ids, space.wild.attention_mask(), device, class_index)
    incremental = None not in state["scorers"]
    batch_size = auto_batch_size(models[0], len(space.wild.ids), state["device"], incremental=incremental)
    with torch.no_grad(), WorkerPool(state, processes) as workers:
        if candidates is None:
            return beam_search(workers, space, rank, beam_width(options.num_designs), batch_size, progress)
        return candidates, score_candidates(workers, space, candidates, batch_size, progress)


def check_constraints(
    options: DesignOptions, predictions: np.ndarray, targets: list[str], constraints: list, unmeasured: np.ndarray
) -> None:
    """Refuse constraints that no candidate keeps, naming the first that removes every candidate alone (or saying
    that they do together)."""
    if not constraints or (constraints_hold(predictions, targets, constraints) & unmeasured).any():
        return
    texts = [text for text in options.constraint if text.strip()]
    for text, constraint in zip(texts, constraints):
        if not (constraints_hold(predictions, targets, [constraint]) & unmeasured).any():
            raise ValueError(
                f"--constraint {text!r} holds for none of the {int(unmeasured.sum()):,} candidates (by the members' "
                "mean prediction)."
            )
    raise ValueError(
        f"--constraint {', '.join(map(repr, texts))}: each holds for some candidates, and together for none of the "
        f"{int(unmeasured.sum()):,}."
    )


def smaller_batch_reason(options: DesignOptions, unmeasured: np.ndarray, eligible: np.ndarray) -> str:
    """Why the batch is smaller than --num-designs: the candidates left, the constraints, or the diversity rules."""
    if unmeasured.sum() < options.num_designs:
        return f"the design space holds {int(unmeasured.sum()):,} candidates not measured yet (--exclude)"
    if eligible.sum() < options.num_designs:
        return f"{int(eligible.sum()):,} candidates keep --constraint {', '.join(map(repr, options.constraint))}"
    rules = f"--min-distance {options.min_distance}" + (
        f" and --max-per-site {options.max_per_site}" if options.max_per_site else ""
    )
    return f"{rules} leave no other candidate far enough from those chosen"


def check_finite(options: DesignOptions, objective_values: np.ndarray, sequences: list[str]) -> None:
    """Refuse an objective or acquisition that overflows to infinity (or NaN) for some candidate, naming the
    expression: its ranking would be arbitrary."""
    values = {
        "--objective": objective_values,
        "--acquisition": Acquisition.parse(options.acquisition).values(objective_values),
    }
    for flag, array in values.items():
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(1)
        if bad.any():
            expression = (options.objective or "the target") if flag == "--objective" else options.acquisition
            raise ValueError(
                f"{flag} {expression!r} is not a finite number for {int(bad.sum()):,} candidates (e.g. "
                f"{sequences[int(np.argmax(bad))]}): its values overflow."
            )


def check_search(options: DesignOptions, space: DesignSpace) -> bool:
    """Whether the space is scored exhaustively (`--search`), refusing an exhaustive search above --max-candidates."""
    size = space.size()
    if options.search == "exhaustive" and size > options.max_candidates:
        raise ValueError(
            f"the design space holds {size:,} candidates, more than --max-candidates {options.max_candidates:,}; "
            "narrow --positions, --letters or --max-mutations, or pass --search beam."
        )
    return options.search == "exhaustive" or (options.search == "auto" and size <= options.max_candidates)


def constraints_hold(predictions: np.ndarray, targets: list[str], constraints: list) -> np.ndarray:
    """Where every constraint holds for the members' mean prediction of each target."""
    means = {name: predictions[:, :, index].mean(1) for index, name in enumerate(targets)}
    holds = np.ones(len(predictions), dtype=bool)
    for constraint in constraints:
        holds &= constraint(means)
    return holds


def choose_designs(
    options: DesignOptions, objective_values: np.ndarray, candidates: list[Mutations], eligible: np.ndarray
) -> tuple[list[int], np.ndarray]:
    """The chosen candidates' indices and the value each candidate was ranked by (for Thompson sampling, the member's
    prediction that chose it; the members' mean elsewhere)."""
    acquisition = Acquisition.parse(options.acquisition)
    rules = DiversityRules(options.min_distance, options.max_per_site)
    if acquisition.kind == "thompson":
        members = objective_values.shape[1]
        turns = thompson_turns(members, options.num_designs, options.seed)
        chosen = choose([objective_values[:, member] for member in range(members)], turns, candidates, eligible, rules)
        ranked_by = objective_values.mean(1)
        # Every member ranks the same eligible candidates, so none runs out before the others: design i is turn i's.
        ranked_by[chosen] = [objective_values[index, turn] for index, turn in zip(chosen, turns)]
        return chosen, ranked_by
    values = acquisition.values(objective_values)
    return choose([values], [0] * options.num_designs, candidates, eligible, rules), values


def design_columns(space, candidates, sequences, predictions, targets, objective_values, ranked_by) -> dict[str, list]:
    """Per candidate: sequence, mutations, each target's prediction (the members' mean, and their standard deviation
    for an ensemble), the objective (mean and spread over members), the value it was ranked by, and its distance to
    the wild type."""
    columns = {
        "sequence": sequences,
        "mutations": [
            ":".join(space.mutation_name(position, letter) for position, letter in mutations)
            for mutations in candidates
        ],
    }
    columns.update(
        {
            name: values.tolist()
            for name, values in member_columns(predictions, [f"predicted_{name}" for name in targets]).items()
        }
    )
    columns.update(
        {name: values.tolist() for name, values in member_columns(objective_values[:, :, None], ["objective"]).items()}
    )
    columns["acquisition"] = ranked_by.tolist()
    columns["distance_to_wild_type"] = [len(mutations) for mutations in candidates]
    return columns


def nearest_distances(sequences: list[str], measured: set[str]) -> list[int | None]:
    """Each sequence's Hamming distance to the nearest measured sequence of its length (None when there is none); the
    sequences share one length (substitution variants of the wild type)."""
    if not sequences:
        return []
    length = len(sequences[0])
    pool = np.array([np.frombuffer(entry.encode(), dtype=np.uint8) for entry in measured if len(entry) == length])
    if not len(pool):
        return [None] * len(sequences)
    distances = []
    for sequence in sequences:
        distances.append(int((pool != np.frombuffer(sequence.encode(), dtype=np.uint8)).sum(1).min()))
    return distances
