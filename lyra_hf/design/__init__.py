"""Choosing the next variants to measure, the library behind `lyra-design`:

space.py        the design space: positions, letters, the number of changes; its size and candidates
expressions.py  the --objective and --constraint grammar (targets, numbers, + - * > <), never eval
scoring.py      candidates scored exactly by lyra-scan's incremental scorer
selection.py    acquisition (mean, ucb, Thompson sampling), constraints and diversity rules
designer.py     `design()`: score and choose
figures.py      design.png
command.py      the `lyra-design` command line

from lyra_hf.design import DesignOptions, design
result = design(models, tokenizer, "MKTAYIAKQR", DesignOptions(positions="3-6", max_mutations=2, num_designs=8))
result.designs   # a datasets.Dataset, best first
"""

from .command import build_parser, main
from .designer import DesignOptions, DesignResult, design


__all__ = ["DesignOptions", "DesignResult", "build_parser", "design", "main"]
