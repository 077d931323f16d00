"""Which optional parts a new model gets, decided from its training data: the site effects (a weight per position and
letter, started from a linear fit) and the global-epistasis curve. Each choice comes with the evidence for it,
which results.json records under `components`."""

from dataclasses import dataclass, field

from ..data import SEQUENCE_COLUMN
from ..data.library import check_library
from ..tasks import TASKS
from .options import TrainOptions


@dataclass
class Components:
    """A new model's optional parts (`LyraConfig.site_effects_length`, `LyraConfig.global_epistasis`) and, per part,
    what was chosen and why."""

    site_effects_length: int = 0
    global_epistasis: bool = False
    record: dict = field(default_factory=dict)

    def apply(self, config) -> None:
        """Set a new model's configuration to these parts."""
        config.site_effects_length, config.global_epistasis = self.site_effects_length, self.global_epistasis
        if config.site_effects_length and config.site_effects_learning_rate is None and not config.global_epistasis:
            # Started from the one-hot fit, the per-position term stays there and the rest of the model learns what it
            # misses: training it too lost validation and test Spearman on GFP (BENCHMARKS.md, "Small data"). Under a
            # global-epistasis curve the fit's linear-scale effects are only a start, and train.
            config.site_effects_learning_rate = 0.0


def choose_site_effects(options: TrainOptions, train) -> tuple[int, dict]:
    """How many positions the site effects cover, and why: none for a per-residue head or with `off`; the longest
    training sequence with `on`; with `auto`, the one length of a variant library's sequences
    (`lyra_hf.data.library`), else none."""
    if TASKS[options.task].labels_per_residue:
        return 0, {"on": False, "why": "a per-residue head has no sequence-level term"}
    if options.site_effects != "auto":
        on = options.site_effects == "on"
        length = max(len("".join(sequence.split())) for sequence in train[SEQUENCE_COLUMN]) if on else 0
        return length, {"on": on, "why": f"--site-effects {options.site_effects}"}
    library = check_library(train[SEQUENCE_COLUMN])
    return (library.length if library.is_library else 0), {
        "on": library.is_library,
        "why": library.reason,
        "library": library.record(),
    }


def choose_global_epistasis(options: TrainOptions, config, site_effects_length: int) -> dict:
    """Whether a regression head ends in the global-epistasis curve, and why: as `--global-epistasis` says; with
    `auto`, as a --config JSON says, else with site effects (BENCHMARKS.md, "Shared substitution effects and global
    epistasis")."""
    if not TASKS[options.task].numeric_labels:
        return {"on": False, "why": "the curve is for regression"}
    if options.global_epistasis != "auto":
        return {"on": options.global_epistasis == "on", "why": f"--global-epistasis {options.global_epistasis}"}
    if options.config:
        return {"on": bool(config.global_epistasis), "why": f"--config {options.config}"}
    on = bool(site_effects_length)
    return {"on": on, "why": "with the site effects" if on else "the site effects are off"}


def choose_components(options: TrainOptions, config, train) -> Components:
    """The optional parts of a new model trained on `train` (the training split's rows)."""
    length, site_effects = choose_site_effects(options, train)
    curve = choose_global_epistasis(options, config, length)
    return Components(length, curve["on"], {"site_effects": site_effects, "global_epistasis": curve})
