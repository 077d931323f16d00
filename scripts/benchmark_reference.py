"""Reference models outside Lyra on the shared regression data, to tell how far a target lies above what this data
allows: a global-epistasis model (a learnt sigmoid of a sum of one-hot weights, as Otwinowski et al. 2018 fit to
GFP) and the same model with a one-hidden-layer MLP of the one-hot added inside the sigmoid, which can learn pairwise
terms. Honest protocol, as lyra-train's: the validation rows lyra-train carves with the same seed choose the epoch,
the whole test set is scored once, for each seed and for the mean of the seeds' predictions.

    python scripts/benchmark_reference.py --data gfp gifford --hidden 0 64 --seeds 0 1 2

One process, one thread; prints a markdown table.
"""

import argparse
import sys
from pathlib import Path

import datasets
import numpy as np
import torch
from scipy.stats import spearmanr


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark_accuracy import SHARED

from lyra_hf.baseline import one_hot
from lyra_hf.data.loading import carve_validation


COLUMNS = {"gfp": ("sequence", "label"), "gifford": ("CDR3", "enrichment")}
LETTERS = "ACDEFGHIKLMNPQRSTVWYJX"  # Gifford's padding (J) and unknown (X) are letters of their own here
EPOCHS, BATCH_SIZE, LEARNING_RATE, WEIGHT_DECAY = 60, 128, 1e-3, 0.01


class GlobalEpistasis(torch.nn.Module):
    """lower + span * sigmoid(one-hot weights + MLP(one-hot)); `hidden` 0 leaves the MLP out."""

    def __init__(self, features: int, hidden: int, labels: torch.Tensor):
        super().__init__()
        self.additive = torch.nn.Linear(features, 1)
        self.pairwise = (
            torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
            if hidden
            else None
        )
        self.lower = torch.nn.Parameter(labels.min().clone())
        self.span = torch.nn.Parameter(labels.max() - labels.min())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        latent = self.additive(features)
        if self.pairwise is not None:
            latent = latent + self.pairwise(features)
        return self.lower + self.span * torch.sigmoid(latent.squeeze(-1))


def splits(name: str, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train, validation (lyra-train's carve for `seed`) and test, as dense one-hot features and labels."""
    sequence, label = COLUMNS[name]
    train = datasets.Dataset.from_csv(str(SHARED / name / "train.csv"))
    test = datasets.Dataset.from_csv(str(SHARED / name / "test.csv"))
    train, validation = carve_validation(train, 0.1, seed, name, sequence_column=sequence)
    width = max(len(text) for text in train[sequence])
    return {
        split: (
            torch.tensor(one_hot(rows[sequence], LETTERS, width).toarray(), dtype=torch.float32),
            torch.tensor(rows[label], dtype=torch.float32),
        )
        for split, rows in (("train", train), ("validation", validation), ("test", test))
    }


def fit(data: dict, hidden: int, seed: int) -> tuple[float, int, dict]:
    """Train for EPOCHS; the best validation Spearman, its epoch, and that epoch's validation and test predictions."""
    torch.manual_seed(seed)
    features, labels = data["train"]
    model = GlobalEpistasis(features.shape[1], hidden, labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    best = (-np.inf, 0, {})
    for epoch in range(1, EPOCHS + 1):
        model.train()
        for batch in torch.randperm(len(labels)).split(BATCH_SIZE):
            loss = torch.nn.functional.mse_loss(model(features[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            predictions = {split: model(data[split][0]).numpy() for split in ("validation", "test")}
        score = spearmanr(predictions["validation"], data["validation"][1].numpy())[0]
        if score > best[0]:
            best = (score, epoch, predictions)
    return best


def rows_for(name: str, hidden: int, seeds: list[int], data: dict) -> list[str]:
    """One table row per seed, and one for the mean of the seeds' predictions."""
    rows, ensemble = [], {"validation": 0.0, "test": 0.0}
    truth = {split: data[split][1].numpy() for split in ("validation", "test")}
    model = f"global epistasis + MLP {hidden}" if hidden else "global epistasis (additive)"
    for seed in seeds:
        score, epoch, predictions = fit(data, hidden, seed)
        test = spearmanr(predictions["test"], truth["test"])[0]
        rows.append(f"| {name} | {model} | {seed} | {epoch} | {score:.4f} | {test:.4f} |")
        ensemble = {split: ensemble[split] + predictions[split] / len(seeds) for split in ensemble}
        print(rows[-1], flush=True)
    if len(seeds) > 1:
        scores = {split: spearmanr(ensemble[split], truth[split])[0] for split in ensemble}
        rows.append(
            f"| {name} | {model} | mean of {len(seeds)} | - | {scores['validation']:.4f} | {scores['test']:.4f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", choices=sorted(COLUMNS), default=["gfp", "gifford"])
    parser.add_argument("--hidden", nargs="+", type=int, default=[0, 64], help="MLP widths; 0 is the additive model")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--data-seed", type=int, default=0, help="the seed of the validation carve (lyra-train's --seed)"
    )
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    rows = [
        "| data | model | seed | best epoch | validation Spearman | test Spearman |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    print("\n".join(rows), flush=True)
    for name in arguments.data:
        data = splits(name, arguments.data_seed)
        for hidden in arguments.hidden:
            rows += rows_for(name, hidden, arguments.seeds, data)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
