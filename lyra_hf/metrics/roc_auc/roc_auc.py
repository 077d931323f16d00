"""Area under the ROC curve: binary scores, or one-vs-rest macro average over class probabilities.

An `evaluate` metric module shipped inside lyra-hf, so that it loads offline: `evaluate.load(path_to_this_folder)`
(see `lyra_hf.metrics.load_metric`).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score


class RocAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions and references: one value per example",
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("float")), "references": datasets.Value("int32")}
                ),
                datasets.Features({"predictions": datasets.Value("float"), "references": datasets.Value("int32")}),
            ],
        )

    def _compute(self, predictions, references):
        scores = np.asarray(predictions, dtype=np.float64)
        if scores.ndim == 2 and scores.shape[1] == 2:
            scores = scores[:, 1]  # binary task given as two class probabilities: score of the positive class
        multi_class = "ovr" if scores.ndim == 2 else "raise"
        return {"roc_auc": float(roc_auc_score(references, scores, multi_class=multi_class, average="macro"))}
