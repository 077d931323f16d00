"""Mutational scanning, the library behind `lyra-scan`:

scoring.py   the wild type's checks, batches of mutants, `score_group` (incremental or full forward passes)
mutants.py   `scan`: single mutants and double mutants at chosen positions, with epistasis; `scan_all_pairs`
pairs.py     every double mutant streamed to Parquet, with a position x position summary
figures.py   the PNG figures
command.py   the `lyra-scan` command line

from lyra_hf.scan import scan
result = scan(model, tokenizer, "MKTAYIAKQR", pairs=[3, 4, 5])
"""

from .command import build_parser, main
from .figures import plot
from .mutants import ScanResult, parse_positions, scan, scan_all_pairs
from .scoring import auto_batch_size, encode_wild_type, mutant_letters, score_group, scoring_state, site_groups


__all__ = [
    "ScanResult",
    "auto_batch_size",
    "build_parser",
    "encode_wild_type",
    "main",
    "mutant_letters",
    "parse_positions",
    "plot",
    "scan",
    "scan_all_pairs",
    "score_group",
    "scoring_state",
    "site_groups",
]
