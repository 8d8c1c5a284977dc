"""Fine-tuning BLIP-2 from TSV manifests: validation of the data, the training loop, checkpoints and resume."""

from helpers.finetune.loop import TrainingConfig, TrainingResult, train
from helpers.finetune.manifests import (
    COLUMNS,
    Manifest,
    ManifestError,
    Problem,
    check_manifest,
    read_manifest,
)
from helpers.finetune.trainable import LoraSettings

__all__ = [
    "COLUMNS",
    "LoraSettings",
    "Manifest",
    "ManifestError",
    "Problem",
    "TrainingConfig",
    "TrainingResult",
    "check_manifest",
    "read_manifest",
    "train",
]
