"""Pearson correlation between predictions and references.

An `evaluate` metric module shipped inside lyra-hf, so that it loads offline: `evaluate.load(path_to_this_folder)`
(see `lyra_hf.metrics.load_metric`).
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr


class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions and references: one value per example",
            features=datasets.Features({"predictions": datasets.Value("float"), "references": datasets.Value("float")}),
        )

    def _compute(self, predictions, references):
        # A correlation with a constant is undefined: NaN, said once by the caller rather than by a scipy warning.
        if np.ptp(predictions) == 0 or np.ptp(references) == 0:
            return {"pearsonr": float("nan")}
        return {"pearsonr": float(pearsonr(references, predictions)[0])}
