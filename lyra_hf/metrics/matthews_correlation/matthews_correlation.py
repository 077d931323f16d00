"""Matthews correlation coefficient (multi-class generalisation included).

An `evaluate` metric module shipped inside lyra-hf, so that it loads offline: `evaluate.load(path_to_this_folder)`
(see `lyra_hf.metrics.load_metric`).
"""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions and references: one value per example",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
