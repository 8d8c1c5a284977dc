"""Manifest examples as training batches, in an order that a resumed run can replay exactly."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from helpers.finetune.manifests import Manifest
from helpers.images import MAX_PIXELS, load_image
from helpers.prompts import lavis_caption, lavis_question, vqa_prompt


class TaskDataset(Dataset):
    """One sample per manifest line: the image with its prompt and target (caption, VQA) or text (retrieval).

    Captions train after `caption_prompt` (empty by default; the paper's COCO fine-tuning used "a photo of")
    and VQA with the zero-shot VQA prompt that `ask` uses, so the fine-tuned model answers through the same
    API calls as before. Questions and captions are cleaned as LAVIS's `blip_question` and `blip_caption`
    clean them in training and at inference.
    """

    def __init__(self, manifest: Manifest, vqa_template: str, caption_prompt: str = "") -> None:
        self.manifest = manifest
        self.vqa_template = vqa_template
        self.caption_prompt = caption_prompt

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.manifest.examples[index]
        sample = {"image": load_image(example.image, max_pixels=MAX_PIXELS)}  # as check_manifest loads it
        if self.manifest.task == "vqa":
            return sample | {
                "prompt": vqa_prompt(lavis_question(example.text), (), self.vqa_template),
                "target": example.answer,
            }
        if self.manifest.task == "caption":
            return sample | {"prompt": self.caption_prompt, "target": lavis_caption(example.text)}
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


class MergedBatches(Sampler[list[int]]):
    """Batches of `batch_size` indices; a last batch smaller than `smallest` joins the batch before it.

    Retrieval learns from in-batch negatives, so a final batch of one example has nothing to contrast with:
    with `smallest=2` it is merged into the previous batch (one batch of batch_size + 1), never dropped, so
    every example is seen every epoch. `smallest=1` gives ordinary batches.
    """

    drop_last = False  # read by accelerate when it shards batches over processes

    def __init__(self, sampler: EpochShuffle, batch_size: int, smallest: int = 1) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.smallest = smallest

    @property
    def merges_last(self) -> bool:
        """True when the last batch of every epoch is merged into the one before it."""
        full, rest = divmod(len(self.sampler), self.batch_size)
        return 0 < rest < self.smallest and full > 0

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size) - int(self.merges_last)

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        batches = [
            indices[start : start + self.batch_size] for start in range(0, len(indices), self.batch_size)
        ]
        if self.merges_last:
            batches[-2:] = [batches[-2] + batches[-1]]
        yield from batches


def make_loader(
    dataset: TaskDataset, batch_size: int, num_workers: int, seed: int, smallest_batch: int = 1
) -> DataLoader:
    """A loader over `EpochShuffle` with its own generator, so iterating never draws from the global RNG.

    `smallest_batch`: a last batch smaller than this is merged into the one before it (`MergedBatches`).
    """
    return DataLoader(
        dataset,
        batch_sampler=MergedBatches(EpochShuffle(len(dataset), seed), batch_size, smallest_batch),
        num_workers=num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
