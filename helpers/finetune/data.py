"""Manifest examples as training batches, in an order that a resumed run can replay exactly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from helpers.finetune.manifests import Manifest
from helpers.images import load_image
from helpers.prompts import vqa_prompt


class TaskDataset(Dataset):
    """One sample per manifest line: the image with its prompt and target (caption, VQA) or text (retrieval).

    Captions train with an empty prompt and VQA with the zero-shot VQA prompt that `ask` uses, so the
    fine-tuned model answers through the same API calls as before.
    """

    def __init__(self, manifest: Manifest, vqa_template: str) -> None:
        self.manifest = manifest
        self.vqa_template = vqa_template

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.manifest.examples[index]
        sample = {"image": load_image(example.image)}
        if self.manifest.task == "vqa":
            return sample | {
                "prompt": vqa_prompt(example.text, (), self.vqa_template),
                "target": example.answer,
            }
        if self.manifest.task == "caption":
            return sample | {"prompt": "", "target": example.text}
        return sample | {"text": example.text}


class EpochShuffle(Sampler[int]):
    """A fresh permutation every epoch, a pure function of (seed, epoch): resuming replays the same order."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.size, generator=generator).tolist()


def collate(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Keep images as PIL and texts as strings: the backend's processor turns them into tensors."""
    return {key: [sample[key] for sample in samples] for key in samples[0]}


def make_loader(dataset: TaskDataset, batch_size: int, num_workers: int, seed: int) -> DataLoader:
    """A loader over `EpochShuffle` with its own generator, so iterating never draws from the global RNG."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffle(len(dataset), seed),
        num_workers=num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
