"""design.png: the candidates' predicted objective against its spread over ensemble members, with the chosen batch
marked, and how often the batch changes each position."""

from collections import Counter
from pathlib import Path

import numpy as np


def plot_design(result, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (scatter, frequency) = plt.subplots(1, 2, figsize=(12, 4.5))
    objective = np.asarray(result.candidates["objective"])
    spread = np.asarray(result.candidates.get("objective_std", np.zeros_like(objective)))
    scatter.scatter(
        objective, spread, s=3, color="lightgrey", label=f"candidates ({len(objective):,})", rasterized=True
    )
    scatter.scatter(
        objective[result.chosen], spread[result.chosen], s=12, color="crimson", label=f"chosen ({len(result.chosen)})"
    )
    scatter.set_xlabel("predicted objective (members' mean)")
    scatter.set_ylabel("standard deviation over members")
    scatter.legend(loc="best")
    counts = Counter(
        int(name[1:-1]) for mutations in result.designs["mutations"] for name in mutations.split(":") if name
    )
    positions = sorted(counts)
    frequency.bar(
        [str(position) for position in positions], [counts[position] for position in positions], color="steelblue"
    )
    frequency.set_xlabel("position (1-based)")
    frequency.set_ylabel("designs changing it")
    if len(positions) > 30:
        frequency.set_xticks(frequency.get_xticks()[:: max(1, len(positions) // 30)])
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=130)
    finally:
        plt.close(figure)
    return path
