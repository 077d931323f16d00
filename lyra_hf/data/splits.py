"""Where each row goes: a split column (FLIP's `set` and `validation`) or a fold column (ProteinGym's folds)."""

import math
from collections.abc import Callable

import datasets

from .files import _as_number


TRUE_VALUES = ("true", "1", "yes", "y", "t")
FALSE_VALUES = ("false", "0", "no", "n", "f", "", "nan", "none")


def routing_problems(
    spell: Callable[[str], str],
    *,
    split_files: bool,
    split_column: str | None,
    fold_column: str | None,
    validation_column: str | None,
    residue_marks: str | None,
    labels_per_residue: bool,
) -> list[str]:
    """The rules of where rows go and which residues are scored, for lyra-train's options and `load_sequence_dataset`'s
    arguments alike: `spell` writes a name as the caller's user knows it (`--split-column`, or `split_column`),
    `split_files` says whether a validation or test file is given, and `residue_marks` is the (spelled) name of the
    option that marks residues without a label, when one is set."""
    problems = []
    for name, column in (("split_column", split_column), ("fold_column", fold_column)):
        if column and split_files:
            problems.append(
                f"{spell(name)} reads every split from the train file alone; give no validation or test file with it"
            )
    if split_column and fold_column:
        problems.append(f"give {spell('split_column')} or {spell('fold_column')}, not both")
    if validation_column and not split_column:
        problems.append(
            f"{spell('validation_column')} needs {spell('split_column')}: it marks validation rows among the train rows"
        )
    if residue_marks and not labels_per_residue:
        problems.append(
            f"{residue_marks} marks residues without a label: it needs a per-residue task (token-classification)"
        )
    return problems


def _is_true(value, column: str, row: int, where: str) -> bool:
    """A yes/no cell as the CSV reader gives it: a bool, a number (0 or NaN false), or text such as True, yes, 1."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        return not math.isnan(value) and value != 0
    text = str(value).strip().lower()
    if text not in TRUE_VALUES + FALSE_VALUES:
        raise ValueError(f"{where}: {value!r} in column {column!r} at row {row} is neither true nor false.")
    return text in TRUE_VALUES


def split_by_column(
    dataset: datasets.Dataset,
    split_column: str,
    split_names: tuple[str, str],
    validation_column: str | None,
    where: str,
) -> dict[str, datasets.Dataset]:
    """Train and test rows by the value of `split_column`, and validation rows by a true `validation_column` among the
    train rows; any other value is refused, naming it and its row."""
    train_name, test_name = split_names
    rows = {"train": [], "validation": [], "test": []}
    validation = dataset[validation_column] if validation_column else None
    for row, value in enumerate(dataset[split_column]):
        name = str(value).strip()
        if name == test_name:
            rows["test"].append(row)
        elif name == train_name:
            rows[
                "validation"
                if validation is not None and _is_true(validation[row], validation_column, row + 1, where)
                else "train"
            ].append(row)
        else:
            raise ValueError(
                f"{where}: {value!r} in column {split_column!r} at row {row + 1} is neither {train_name!r} nor "
                f"{test_name!r}."
            )
    for split, name in (("train", train_name), ("test", test_name)):
        if not rows[split]:
            raise ValueError(f"{where}: no row has {name!r} in column {split_column!r}.")
    if validation_column and not rows["validation"]:
        raise ValueError(f"{where}: no {train_name!r} row is marked true in column {validation_column!r}.")
    # Without a validation column, validation is carved from train as for a train file alone.
    return {split: dataset.select(indices) for split, indices in rows.items() if indices}


def fold_values(dataset: datasets.Dataset, fold_column: str) -> list[str]:
    """The folds of `fold_column`, as strings, in numeric order where they are numbers."""
    values = {str(value).strip() for value in dataset[fold_column]}
    return sorted(values, key=lambda value: (_as_number(value) is None, _as_number(value) or 0, value))


def split_by_fold(
    dataset: datasets.Dataset, fold_column: str, test_fold: str | None, where: str
) -> dict[str, datasets.Dataset]:
    """The rows of fold `test_fold` as test and all others as train (validation is carved from them after)."""
    folds = fold_values(dataset, fold_column)
    if test_fold is None or str(test_fold) not in folds:
        raise ValueError(f"{where}: fold {test_fold!r} is not in column {fold_column!r}, whose folds are {folds}.")
    in_fold = [str(value).strip() == str(test_fold) for value in dataset[fold_column]]
    if all(in_fold):
        raise ValueError(
            f"{where}: every row is in fold {test_fold!r} of column {fold_column!r}; nothing is left to train on."
        )
    return {
        "train": dataset.select([row for row, flag in enumerate(in_fold) if not flag]),
        "test": dataset.select([row for row, flag in enumerate(in_fold) if flag]),
    }
