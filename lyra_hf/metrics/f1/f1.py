"""Macro-averaged F1 over classes (each class counts the same, whatever its size).

An `evaluate` metric module shipped inside lyra-hf, so that it loads offline: `evaluate.load(path_to_this_folder)`
(see `lyra_hf.metrics.load_metric`).
"""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions and references: one value per example",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references):
        return {"f1": float(f1_score(references, predictions, average="macro"))}
