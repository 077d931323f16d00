"""Coefficient of determination R^2 of predictions for references.

An `evaluate` metric module shipped inside lyra-hf, so that it loads offline: `evaluate.load(path_to_this_folder)`
(see `lyra_hf.metrics.load_metric`).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import r2_score


class RSquared(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions and references: one value per example",
            features=datasets.Features({"predictions": datasets.Value("float"), "references": datasets.Value("float")}),
        )

    def _compute(self, predictions, references):
        # R² divides by the references' variance: undefined (NaN) for constant references, where scikit-learn warns.
        if np.ptp(references) == 0:
            return {"r_squared": float("nan")}
        return {"r_squared": float(r2_score(references, predictions))}
