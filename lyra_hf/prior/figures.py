"""The prior's heatmap: each position's score for each letter (the wild type's, 0, outlined)."""

from pathlib import Path

import numpy as np

from ..outputs import atomic_file
from .table import PriorTable


def plot_prior(prior: PriorTable, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    length = len(prior.wild_type)
    figure, axis = plt.subplots(figsize=(min(40, 2 + length * 0.12), 4.5))
    scores = np.ma.masked_invalid(prior.scores.T)
    limit = float(np.nanmax(np.abs(prior.scores))) if np.isfinite(prior.scores).any() else 1.0
    image = axis.imshow(scores, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest")
    for position, letter in enumerate(prior.wild_type):
        if letter in prior.letters:
            axis.add_patch(
                plt.Rectangle((position - 0.5, prior.letters.index(letter) - 0.5), 1, 1, fill=False, linewidth=0.6)
            )
    axis.set_yticks(range(len(prior.letters)), list(prior.letters), fontsize=7)
    axis.set_xlabel("position (1-based; no colour: no score)")
    axis.set_title(f"zero-shot prior: {prior.source}")
    ticks = np.arange(0, length, max(1, length // 25))
    axis.set_xticks(ticks, [str(tick + 1) for tick in ticks], fontsize=7)
    figure.colorbar(image, ax=axis, label="score (substitution vs wild type)")
    figure.tight_layout()
    try:
        with atomic_file(path) as temporary:
            figure.savefig(temporary, dpi=110, format="png")
    finally:
        plt.close(figure)
    return path
