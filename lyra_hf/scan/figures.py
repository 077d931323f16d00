"""A scan's figures (PNG, matplotlib from the `plot` extra): the single-mutant heatmap, the per-position effects, the
strongest epistasis of the double mutants scanned and the all-pairs summary."""

from pathlib import Path

import numpy as np


def plot(result, output_dir: Path, letters: str, heatmap: str = "delta") -> list[Path]:
    """PNG figures of the first target of a `ScanResult`: position x letter heatmap of deltas (wild type marked; with
    `heatmap="std"`, an ensemble's standard deviation of them), per-position mean and minimum delta, and the strongest
    epistasis per position pair. Needs matplotlib (`pip install lyra-hf[plot]`)."""
    import matplotlib

    matplotlib.use("Agg")
    suffix = "" if len(result.targets) == 1 else f"_{result.targets[0]}"
    deltas = position_by_letter(result, letters, f"delta{suffix}")
    written = [singles_heatmap(result, letters, suffix, deltas, heatmap, output_dir / "singles_heatmap.png")]
    written.append(positions_figure(deltas, output_dir / "positions.png"))
    if result.pairs is not None and len(result.pairs):
        written.append(epistasis_figure(result, suffix, output_dir / "epistasis.png"))
    if result.pair_summary is not None and (~np.isnan(result.pair_summary["max_abs_epistasis"])).any():
        written.append(pair_summary_figure(result.pair_summary["max_abs_epistasis"], output_dir / "pair_summary.png"))
    return written


def position_by_letter(result, letters: str, column: str) -> np.ndarray:
    """A singles column as a (letters, positions) array, NaN where no mutant was scored."""
    values = np.full((len(letters), len(result.sequence)), np.nan)
    for position, mutant, value in zip(result.singles["position"], result.singles["mutant"], result.singles[column]):
        values[letters.index(mutant), position - 1] = value
    return values


def singles_heatmap(result, letters: str, suffix: str, deltas: np.ndarray, heatmap: str, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    length = len(result.sequence)
    figure, axis = plt.subplots(figsize=(max(6, length * 0.18), 4.5))
    extent = (0.5, length + 0.5, len(letters) - 0.5, -0.5)  # 1-based positions on the x axis
    if heatmap == "std":
        shown = position_by_letter(result, letters, f"delta{suffix}_std")
        image = axis.imshow(shown, aspect="auto", cmap="viridis", vmin=0, interpolation="nearest", extent=extent)
        axis.set_title(
            f"Single-mutant delta{suffix.replace('_', ' ')}: standard deviation over {result.members} ensemble members"
        )
    else:
        limit = np.nanmax(np.abs(deltas)) or 1.0
        image = axis.imshow(
            deltas, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest", extent=extent
        )
        members = f" (mean of {result.members} ensemble members)" if result.members > 1 else ""
        axis.set_title(f"Single-mutant delta{suffix.replace('_', ' ')}{members}")
    for position, character in enumerate(result.sequence, 1):
        if character in letters:
            axis.plot(position, letters.index(character), marker="o", markersize=2.5, color="black")
    axis.set_yticks(range(len(letters)), list(letters), fontsize=6)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("position (wild type marked with dots)")
    figure.colorbar(image, ax=axis, label="delta std" if heatmap == "std" else "delta")
    return save(figure, path)


def positions_figure(deltas: np.ndarray, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    length = deltas.shape[1]
    figure, axis = plt.subplots(figsize=(max(6, length * 0.12), 3.5))
    positions = np.arange(1, length + 1)
    # Positions without mutants (padding characters) stay gaps, computed without NumPy's empty-slice warnings.
    scored = ~np.isnan(deltas)
    counts = scored.sum(0)
    with np.errstate(invalid="ignore"):
        mean = np.where(counts > 0, np.where(scored, deltas, 0.0).sum(0) / counts, np.nan)
    minimum = np.where(counts > 0, np.where(scored, deltas, np.inf).min(0), np.nan)
    axis.plot(positions, mean, label="mean delta")
    axis.plot(positions, minimum, label="min delta")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set_xlabel("position")
    axis.set_ylabel("delta")
    axis.legend()
    return save(figure, path)


def epistasis_figure(result, suffix: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    length = len(result.sequence)
    strongest = np.full((length, length), np.nan)
    for a, b, value in zip(result.pairs["position_a"], result.pairs["position_b"], result.pairs[f"epistasis{suffix}"]):
        current = strongest[a - 1, b - 1]
        if np.isnan(current) or abs(value) > abs(current):
            strongest[a - 1, b - 1] = strongest[b - 1, a - 1] = value
    chosen = sorted(set(result.pairs["position_a"]) | set(result.pairs["position_b"]))
    matrix = strongest[np.ix_([p - 1 for p in chosen], [p - 1 for p in chosen])]
    figure, axis = plt.subplots(figsize=(5, 4.5))
    limit = np.nanmax(np.abs(matrix)) or 1.0
    image = axis.imshow(matrix, cmap="PuOr", vmin=-limit, vmax=limit, interpolation="nearest")
    axis.set_xticks(range(len(chosen)), chosen, fontsize=6, rotation=90)
    axis.set_yticks(range(len(chosen)), chosen, fontsize=6)
    axis.set_title("Strongest epistasis per position pair")
    figure.colorbar(image, ax=axis, label="epistasis")
    return save(figure, path)


def pair_summary_figure(strongest: np.ndarray, path: Path) -> Path:
    import matplotlib
    import matplotlib.pyplot as plt

    scanned = np.flatnonzero(~np.isnan(strongest).all(0))
    matrix = strongest[np.ix_(scanned, scanned)]
    figure, axis = plt.subplots(figsize=(6, 5.2))
    contiguous = len(scanned) == scanned[-1] - scanned[0] + 1
    extent = (scanned[0] + 0.5, scanned[-1] + 1.5, scanned[-1] + 1.5, scanned[0] + 0.5)  # 1-based positions
    colors = matplotlib.colormaps["magma"].with_extremes(bad="lightgrey")  # the diagonal: no pair
    image = axis.imshow(matrix, cmap=colors, vmin=0, interpolation="nearest", extent=extent if contiguous else None)
    axis.set_xlabel("position")
    axis.set_ylabel("position")
    axis.set_title("Largest |epistasis| per position pair")
    figure.colorbar(image, ax=axis, label="max |epistasis| over letter pairs")
    return save(figure, path)


def save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path
