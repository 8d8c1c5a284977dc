"""Fine-tuning BLIP-2 from TSV manifests: validation of the data, the training loop, checkpoints and resume."""

from helpers.finetune.loop import CheckedRun, TrainingConfig, TrainingResult, check_run, train
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
    "CheckedRun",
    "LoraSettings",
    "Manifest",
    "ManifestError",
    "Problem",
    "TrainingConfig",
    "TrainingResult",
    "check_manifest",
    "check_run",
    "read_manifest",
    "train",
]
