"""Choosing a batch of designs from scored candidates: the acquisition (the members' mean, an upper confidence bound,
or Thompson sampling over ensemble members), the constraints, and the diversity rules.

`predictions` are (candidates, members, targets) arrays; the objective (`expressions.parse_objective`) turns each
member's targets into one value, so that (candidates, members) objective values are what the acquisition reads.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .space import Mutations


@dataclass(frozen=True)
class Acquisition:
    """`mean`, `ucb:BETA` (mean + BETA x standard deviation over members) or `thompson`."""

    kind: str
    beta: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "Acquisition":
        kind, _, beta = text.partition(":")
        if kind == "ucb":
            try:
                value = float(beta)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(
                    f"--acquisition {text!r}: ucb takes a finite number, e.g. ucb:2 (mean + 2 standard deviations)."
                )
            return cls("ucb", value)
        if kind in ("mean", "thompson") and not beta:
            return cls(kind)
        raise ValueError(f"--acquisition {text!r} is not one of mean, ucb:BETA (e.g. ucb:2), thompson.")

    def values(self, objective: np.ndarray) -> np.ndarray:
        """The value that ranks candidates, from per-member objective values (candidates, members)."""
        if self.kind == "ucb":
            return objective.mean(1) + self.beta * objective.std(1)
        return objective.mean(1)


def per_member(predictions: np.ndarray, targets: list[str], function: Callable) -> np.ndarray:
    """`function` of {target: (candidates, members) values}: the objective or a constraint for each member."""
    return function({name: predictions[:, :, index] for index, name in enumerate(targets)})


def distance(first: Mutations, second: Mutations) -> int:
    """Hamming distance between two substitution variants of one wild type."""
    first, second = dict(first), dict(second)
    return sum(first.get(position) != second.get(position) for position in first.keys() | second.keys())


@dataclass
class DiversityRules:
    """`min_distance`: the least Hamming distance between two chosen designs; `max_per_site`: the most designs that
    change one position (whatever the letter)."""

    min_distance: int = 1
    max_per_site: int | None = None

    def allows(self, mutations: Mutations, chosen: list[Mutations], per_site: dict[int, int]) -> bool:
        if self.max_per_site is not None and any(
            per_site.get(position, 0) >= self.max_per_site for position, _ in mutations
        ):
            return False
        return all(distance(mutations, other) >= self.min_distance for other in chosen)


def thompson_turns(members: int, count: int, seed: int) -> list[int]:
    """Which member's predictions pick each design under Thompson sampling: every member in turn, in a fresh random
    order (seeded) for each round of `members` designs."""
    generator = np.random.default_rng(seed)
    return np.concatenate([generator.permutation(members) for _ in range(-(-count // members))])[:count].tolist()


def choose(
    rankings: list[np.ndarray],
    turns: list[int],
    candidates: list[Mutations],
    eligible: np.ndarray,
    rules: DiversityRules,
) -> list[int]:
    """Greedy choice of one design per turn: the best eligible candidate under `rankings[turns[i]]` (values, higher
    first) not chosen yet that keeps the diversity rules with those chosen so far. A ranking whose candidates run out
    gives up its turns; the batch may then be smaller. A candidate a rule refuses stays refused (the chosen set only
    grows), so each ranking is read once, front to back."""
    orders = [iter(np.argsort(-values, kind="stable")) for values in rankings]
    exhausted, chosen, taken, per_site = set(), [], set(), {}
    for turn in turns:
        if turn in exhausted:
            continue
        chosen_mutations = [candidates[index] for index in chosen]
        picked = next(
            (
                int(index)
                for index in orders[turn]
                if eligible[index]
                and index not in taken
                and rules.allows(candidates[index], chosen_mutations, per_site)
            ),
            None,
        )
        if picked is None:
            exhausted.add(turn)
            continue
        chosen.append(picked)
        taken.add(picked)
        for position, _ in candidates[picked]:
            per_site[position] = per_site.get(position, 0) + 1
    return chosen
