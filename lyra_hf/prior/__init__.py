"""Zero-shot priors, the library behind `lyra-train --prior` and `lyra-prior`:

table.py            a prior as one score per position and letter: read, checked against the sequences, written
alignment.py        the site-independent model of a multiple sequence alignment
language_model.py   masked or wild-type marginals of a masked protein language model
figures.py          the prior's heatmap
command.py          the `lyra-prior` command line
"""

from .alignment import site_independent_prior
from .command import build_parser, main
from .language_model import language_model_prior
from .table import PriorTable, prior_for_splits, read_prior, write_prior


__all__ = [
    "PriorTable",
    "build_parser",
    "language_model_prior",
    "main",
    "prior_for_splits",
    "read_prior",
    "site_independent_prior",
    "write_prior",
]
