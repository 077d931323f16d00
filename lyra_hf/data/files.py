"""Reading CSV, TSV and FASTA files: whole (`read_table`, a `datasets.Dataset`) or streamed in chunks
(`stream_table`), after `check_text_file` refused what is not such a file, naming it."""

import codecs
import csv
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import datasets


FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fna", ".fas")
# Formats people hand over that are none of CSV, TSV or FASTA: refused by name rather than parsed as CSV.
OTHER_FORMATS = {
    ".json": "JSON",
    ".jsonl": "JSON Lines",
    ".ndjson": "JSON Lines",
    ".parquet": "Parquet",
    ".xlsx": "Excel",
    ".xls": "Excel",
}
# A genome segment or a long protein in one CSV field outgrows the csv module's default limit of 131,072 characters;
# lyra-train's reader (pandas, through datasets) has none, and lyra-predict must read every file lyra-train reads.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
# The columns of a model-ready dataset (and the sequence field of a FASTA record).
SEQUENCE_COLUMN = "sequence"
LABELS_COLUMN = "labels"


def iter_fasta(path: str | Path, parse_numbers: bool = True) -> Iterator[dict]:
    """The records of a FASTA file one at a time: `id`, `sequence` and one entry per `key=value` in the header (numbers
    where they parse as numbers, unless `parse_numbers` is False), e.g. `>P12345 label=0.73 split=train`. Sequence
    lines are joined without whitespace."""
    header, lines = None, []

    def record() -> dict:
        fields = header.split()
        entry = {"id": fields[0] if fields else ""}
        for field in fields[1:]:
            if "=" in field:
                key, value = field.split("=", 1)
                entry[key] = _as_number(value) if parse_numbers and _as_number(value) is not None else value
        entry[SEQUENCE_COLUMN] = "".join(lines)
        return entry

    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.strip()
            if line.startswith(">"):
                if header is not None:
                    yield record()
                header, lines = line[1:], []
            elif line:
                if header is None:
                    raise ValueError(f"{path}: line {line_number} holds sequence data before any '>' header.")
                lines.append("".join(line.split()))
    if header is None:
        raise ValueError(f"{path}: no FASTA records found.")
    yield record()


def fasta_columns(keys) -> list[str]:
    """`id` first, then the header fields by name, then `sequence`."""
    return sorted(set(keys), key=lambda key: (key != "id", key == SEQUENCE_COLUMN, key))


def read_fasta(path: str | Path) -> datasets.Dataset:
    """Read a FASTA file (see `iter_fasta`) into columns `id`, the header fields and `sequence`."""
    records = list(iter_fasta(path))
    columns = fasta_columns(key for entry in records for key in entry)
    return datasets.Dataset.from_dict({key: [entry.get(key) for entry in records] for key in columns})


def stream_table(path: str | Path, chunk_rows: int = 10_000) -> tuple[list[str], Iterator[dict[str, list[str]]]]:
    """The column names of a CSV, TSV or FASTA file and an iterator over its rows in chunks of `chunk_rows` (a dict of
    columns of strings, as written in the file), reading the file once more per pass rather than holding it whole."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such data file: {path}")
    check_text_file(path)
    if path.suffix.lower() in FASTA_SUFFIXES:
        columns = fasta_columns(key for entry in iter_fasta(path, parse_numbers=False) for key in entry)
        rows = ([str(entry.get(column, "")) for column in columns] for entry in iter_fasta(path, parse_numbers=False))
    else:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            columns = next(csv.reader(handle, delimiter=_delimiter(path)))
        rows = _csv_rows(path, len(columns))

    def chunks():
        chunk = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == chunk_rows:
                yield dict(zip(columns, map(list, zip(*chunk))))
                chunk = []
        if chunk:
            yield dict(zip(columns, map(list, zip(*chunk))))

    return columns, chunks()


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _csv_rows(path: Path, width: int) -> Iterator[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=_delimiter(path))
        next(reader)
        for row_number, row in enumerate((row for row in reader if row), 1):  # not blank lines
            if len(row) != width:
                raise ValueError(f"{path}: row {row_number} has {len(row)} fields; the header has {width}.")
            yield row


def check_text_file(path: Path) -> None:
    """Refuse an empty file, bytes that are not UTF-8 text (a binary or compressed file) and a file whose only non-blank
    line is a header, each naming the file, before a parser fails on them less clearly."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size, head = 0, ""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}: byte {size + error.start:,} ({chunk[error.start]:#04x}) is not UTF-8 text; a CSV, TSV or "
                    "FASTA file is expected (decompress it first if it is compressed)."
                ) from None
            if len([line for line in head.splitlines() if line.strip()]) < 2:
                head += text
            size += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ValueError(
            f"{path}: the file ends inside a multi-byte character; it is truncated or not UTF-8 text."
        ) from None
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes).")
    lines = [line for line in head.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} holds only whitespace.")
    if path.suffix.lower() in OTHER_FORMATS or lines[0].lstrip().startswith(("{", "[")):
        kind = OTHER_FORMATS.get(path.suffix.lower(), "JSON")
        raise ValueError(
            f"{path} is {kind}, not CSV, TSV or FASTA; write it as a CSV file with a header row (e.g. pandas' to_csv)."
        )
    if path.suffix.lower() in FASTA_SUFFIXES:
        return
    if len(lines) == 1:
        raise ValueError(f"{path} has a header ({lines[0].strip()[:80]!r}) but no rows.")
    check_header(path, next(csv.reader([lines[0]], delimiter=_delimiter(path))))


def check_header(path: Path, columns: list[str]) -> None:
    """Refuse a header that names a column twice: a reader would keep one of the two (or rename one) without a word,
    and which one a run used could not be told afterwards. Unnamed columns (an index a spreadsheet wrote) are no one's
    choice, so they may repeat."""
    counts = Counter(column.strip() for column in columns if column.strip())
    repeated = [column for column, count in counts.items() if count > 1]
    if repeated:
        raise ValueError(
            f"{path}: column {repeated[0]!r} appears {counts[repeated[0]]} times in the header; name each column once."
        )


def read_table(path: str | Path, fasta: bool | None = None, text_columns: tuple[str, ...] = ()) -> datasets.Dataset:
    """Read a CSV, TSV or FASTA file into a `datasets.Dataset`; FASTA by the file's suffix unless `fasta` says.
    `text_columns` of a CSV or TSV stay text even where they look numeric (a per-residue mask such as 0011)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such data file: {path}")
    check_text_file(path)
    suffix = path.suffix.lower()
    if fasta or (fasta is None and suffix in FASTA_SUFFIXES):
        return read_fasta(path)
    # Sequences must stay strings even where a column looks numeric (e.g. a DNA column of only "1"s would not).
    return datasets.load_dataset(
        "csv",
        data_files=str(path),
        delimiter=_delimiter(path),
        split="train",
        keep_default_na=False,
        na_values=[""],
        encoding="utf-8-sig",  # spreadsheet exports start with a byte-order mark
        converters={column: str for column in text_columns} or None,
    )


def _as_number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
