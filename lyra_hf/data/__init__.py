"""From files to batches: reading CSV, TSV and FASTA files (`files`), checking their rows (`checks`), splitting them
(`splits`), building and tokenizing datasets (`loading`), and the synthetic landscape (`synthetic`).

Strict where the tokenizer is lenient: an empty or undecodable file, a table with no rows, a sequence with a character
outside the alphabet, an empty sequence or one of only padding characters, a sequence over the length limit, a
missing, NaN or infinite label, or a per-residue label string of the wrong length is rejected with its split, row
number and the offending value, before anything runs.
"""

from .checks import MIN_EVALUATION_ROWS, check_columns, check_rows
from .files import LABELS_COLUMN, SEQUENCE_COLUMN, check_text_file, iter_fasta, read_fasta, read_table, stream_table
from .loading import collator_for, label_names, load_sequence_dataset, tokenize_dataset
from .splits import fold_values
from .synthetic import SyntheticLandscape, synthetic_fitness_dataset, synthetic_landscape, synthetic_wild_type


__all__ = [
    "LABELS_COLUMN",
    "MIN_EVALUATION_ROWS",
    "SEQUENCE_COLUMN",
    "check_text_file",
    "iter_fasta",
    "read_fasta",
    "stream_table",
    "read_table",
    "check_columns",
    "check_rows",
    "load_sequence_dataset",
    "fold_values",
    "SyntheticLandscape",
    "synthetic_fitness_dataset",
    "synthetic_landscape",
    "synthetic_wild_type",
    "label_names",
    "tokenize_dataset",
    "collator_for",
]
