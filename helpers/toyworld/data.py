"""Scenes as tensors: rendered once into uint8 pixels, normalised per batch exactly as the BLIP processor does.

Holding uint8 (150 KB an image) instead of float pixel values (600 KB) keeps a few thousand training images in
memory; normalising a batch costs less than running the processor on PIL images every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import BlipImageProcessor

from helpers.toyworld.world import Scene, render


def render_uint8(scenes: Sequence[Scene]) -> torch.Tensor:
    """(N, 3, 224, 224) uint8 pixels of the scenes."""
    return torch.from_numpy(np.stack([np.asarray(render(scene)).transpose(2, 0, 1) for scene in scenes]))


class PixelNormaliser:
    """uint8 -> pixel_values with the processor's rescale factor, mean and std (its resize is the identity)."""

    def __init__(self, processor: BlipImageProcessor) -> None:
        self.scale = float(processor.rescale_factor)
        self.mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() * self.scale - self.mean) / self.std
