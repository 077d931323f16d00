"""The small grammar of `lyra-design --objective` and `--constraint`: arithmetic over a model's named targets, parsed
here and evaluated on arrays (never `eval`).

    objective   := sum
    constraint  := sum ('>' | '<') sum
    sum         := ['-'] product (('+' | '-') product)*
    product     := atom ('*' atom)*
    atom        := NUMBER | TARGET

NUMBER is a decimal number (`0.5`, `2`, `1e-3`); TARGET is one of the model's target names (its label columns), e.g.
`binding + 0.5*expression` or `expression>0`. Nothing else is accepted: no parentheses, division, functions or other
names.
"""

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)|(?P<operator>[-+*<>]))"
)
Values = dict[str, np.ndarray]


def tokens(text: str, flag: str) -> list[tuple[str, str]]:
    """(kind, text) of each token, refusing any character outside the grammar."""
    found, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None:
            bad = text[position:].lstrip()[0]
            raise ValueError(
                f"{flag} {text!r}: {bad!r} is not allowed; write targets, numbers and + - * (and > or < in a "
                "constraint)."
            )
        kind = match.lastgroup
        found.append((kind, match.group(kind)))
        position = match.end()
    if not found:
        raise ValueError(f"{flag} is empty; write e.g. 'binding + 0.5*expression'.")
    return found


@dataclass
class Parser:
    """Recursive descent over `tokens`, building functions of the targets' values."""

    items: list[tuple[str, str]]
    targets: list[str]
    flag: str
    text: str
    at: int = 0

    def peek(self) -> str | None:
        return self.items[self.at][1] if self.at < len(self.items) else None

    def fail(self, problem: str):
        raise ValueError(f"{self.flag} {self.text!r}: {problem}.")

    def sum(self) -> Callable[[Values], np.ndarray]:
        sign = 1.0
        if self.peek() == "-":
            self.at, sign = self.at + 1, -1.0
        first = self.product()
        terms = [lambda values, first=first, sign=sign: sign * first(values)]
        while self.peek() in ("+", "-"):
            operator = self.items[self.at][1]
            self.at += 1
            term, weight = self.product(), 1.0 if operator == "+" else -1.0
            terms.append(lambda values, term=term, weight=weight: weight * term(values))
        return lambda values: sum(term(values) for term in terms)

    def product(self) -> Callable[[Values], np.ndarray]:
        factors = [self.atom()]
        while self.peek() == "*":
            self.at += 1
            factors.append(self.atom())
        return lambda values: functools.reduce(np.multiply, (factor(values) for factor in factors))

    def atom(self) -> Callable[[Values], np.ndarray]:
        if self.at >= len(self.items):
            self.fail("it ends where a target or a number should be")
        kind, text = self.items[self.at]
        self.at += 1
        if kind == "number":
            if not math.isfinite(float(text)):
                self.fail(f"{text} is too large to be a number (it overflows to infinity)")
            return lambda values, number=float(text): np.float64(number)
        if kind == "name":
            if text not in self.targets:
                self.fail(f"{text!r} is not a target of this model ({', '.join(self.targets)})")
            return lambda values, name=text: values[name]
        self.fail(f"{text!r} where a target or a number should be")


def parse_objective(text: str, targets: list[str]) -> Callable[[Values], np.ndarray]:
    """`--objective`: a function of {target: values} (arrays of one shape) to the objective's values."""
    parser = Parser(tokens(text, "--objective"), targets, "--objective", text)
    objective = parser.sum()
    if parser.peek() is not None:
        parser.fail(
            f"{parser.peek()!r} is not allowed in an objective"
            if parser.peek() in "<>"
            else f"unexpected {parser.peek()!r}"
        )

    # Overflow is left to `designer.check_finite`, which names the candidates it happens for; numpy's warning is not.
    def evaluate(values: Values) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.broadcast_to(objective(values), next(iter(values.values())).shape).astype(np.float64)

    return evaluate


def parse_constraint(text: str, targets: list[str]) -> Callable[[Values], np.ndarray]:
    """`--constraint`: a function of {target: values} to a boolean array, True where the constraint holds."""
    parser = Parser(tokens(text, "--constraint"), targets, "--constraint", text)
    left = parser.sum()
    comparison = parser.peek()
    if comparison not in ("<", ">"):
        parser.fail("a constraint compares two sides with > or <, e.g. 'expression>0'")
    parser.at += 1
    right = parser.sum()
    if parser.peek() is not None:
        parser.fail(f"unexpected {parser.peek()!r} after the comparison")

    def holds(values: Values) -> np.ndarray:
        sides = [overflow_checked(side, values, "--constraint", text) for side in (left, right)]
        kept = sides[0] > sides[1] if comparison == ">" else sides[0] < sides[1]
        return np.broadcast_to(kept, next(iter(values.values())).shape)

    return holds


def overflow_checked(expression: Callable[[Values], np.ndarray], values: Values, flag: str, text: str) -> np.ndarray:
    """The expression's values, refused naming it where a product overflows to infinity (a constraint on them would
    hold or fail by accident). The warning numpy would print is silenced: the refusal says it in one line."""
    with np.errstate(over="ignore", invalid="ignore"):
        result = np.asarray(expression(values), dtype=np.float64)
    if not np.isfinite(result).all():
        raise ValueError(f"{flag} {text!r} is not a finite number for some candidates: its values overflow.")
    return result
