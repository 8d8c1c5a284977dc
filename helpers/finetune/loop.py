"""The fine-tuning loop: AdamW, linear warmup then cosine decay, gradient accumulation, mixed precision,
checkpoints every N steps and at the end, exact resume, validation each epoch, several processes.

It drives a loaded model through the backend-neutral training primitives (`lm_loss`, `retrieval_loss`), so
the same loop trains through either backend. accelerate runs it on one device or many
(`accelerate launch -m helpers train ...`): each process reads its shard of every batch and the trainable
gradients are averaged across processes before each optimizer step. The backends call their modules
directly rather than through one `forward`, which is why gradients are averaged explicitly instead of by a
DistributedDataParallel wrapper; the result is the same synchronous data-parallel update.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from helpers.atomic import staged_file
from helpers.backends.base import Blip2Backend, check_task
from helpers.environment import live_progress
from helpers.finetune.checkpoints import (
    LOG_FILE,
    Progress,
    check_resumable,
    clear_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from helpers.finetune.data import EpochShuffle, TaskDataset, make_loader
from helpers.finetune.image_size import set_image_size
from helpers.finetune.manifests import Manifest, read_manifest
from helpers.finetune.trainable import LoraSettings, Trainable, prepare_trainable
from helpers.finetune.validation import validate
from helpers.generation import GenerationSettings
from helpers.user_input import check_finite, check_integer, check_output_dir
from helpers.viz import training_curves

FIGURE_FILE = "training.png"
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass
class TrainingConfig:
    """Everything a fine-tuning run needs besides the model; defaults follow LAVIS's fine-tuning configs."""

    task: str
    train_manifest: str | Path
    output_dir: str | Path
    val_manifest: str | Path | None = None
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 1000
    gradient_accumulation_steps: int = 1
    max_length: int = 32
    max_grad_norm: float | None = None
    num_workers: int = 0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    train_vision: bool = False
    caption_prompt: str = ""  # the paper's COCO fine-tuning used "a photo of" (prompts.COCO_CAPTION_PROMPT)
    image_size: int | None = None  # None keeps the checkpoint's; the paper fine-tuned at 364 (hf backend)
    lora: LoraSettings | None = None
    checkpoint_every: int | None = 500
    keep_checkpoints: int = 2
    seed: int = 42
    max_new_tokens: int = 30
    resume: bool = True

    def check(self) -> None:
        """Refuse impossible settings before anything is loaded or written."""
        check_task(self.task)
        whole = ("epochs", "batch_size", "gradient_accumulation_steps", "max_length", "warmup_steps")
        for name in (*whole, "seed"):
            check_integer(getattr(self, name), name)
        for name in ("learning_rate", "weight_decay"):
            check_finite(getattr(self, name), name)
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_length": self.max_length,
            "keep_checkpoints": self.keep_checkpoints,
            "max_new_tokens": self.max_new_tokens,
        }
        bad = [f"{name}={value}" for name, value in positive.items() if value < 1]
        bad += [f"{name}={value}" for name, value in self._non_negative().items() if value < 0]
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            bad.append(f"checkpoint_every={self.checkpoint_every}")
        if self.image_size is not None:
            check_integer(self.image_size, "image_size")
            if self.image_size < 1:
                bad.append(f"image_size={self.image_size}")
        if bad:
            raise ValueError(f"invalid training settings: {', '.join(bad)}; use positive counts and rates")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; use one of {MIXED_PRECISION}")
        if self.task == "retrieval" and self.batch_size < 2:
            raise ValueError(
                "retrieval training needs batch_size >= 2: ITC and ITM learn from in-batch negatives"
            )

    def _non_negative(self) -> dict[str, float]:
        return {
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "warmup_steps": self.warmup_steps,
            "num_workers": self.num_workers,
        }

    def resumable_settings(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it: every one that changes the
        result. Epochs do too (they set the learning-rate schedule); manifest paths are compared resolved."""
        settings = asdict(self)
        for key in ("output_dir", "checkpoint_every", "keep_checkpoints", "resume", "num_workers"):
            settings.pop(key)
        for key in ("train_manifest", "val_manifest"):
            if settings[key] is not None:
                settings[key] = str(Path(settings[key]).expanduser().resolve())
        return json.loads(json.dumps(settings, default=str))


@dataclass
class TrainingResult:
    """What a run produced: the model folder, every log record, and the step it ended at."""

    output_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0

    @property
    def losses(self) -> list[float]:
        return [record["loss"] for record in self.history if "loss" in record]


def choose_mixed_precision(requested: str, device: torch.device) -> str:
    """fp16 autocast with loss scaling on GPUs without bf16 (T4), bf16 where there is bf16, none on CPU."""
    if requested != "auto":
        if requested != "no" and device.type != "cuda":
            raise ValueError(f"mixed_precision={requested!r} needs a CUDA GPU; on {device.type} use 'no'")
        return requested
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def train(
    model: Blip2Backend,
    config: TrainingConfig,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    *,
    checked: CheckedRun | None = None,
) -> TrainingResult:
    """Fine-tune `model` in place and write it to `config.output_dir`, loadable by `load_blip2(model_id=...)`.

    Both manifests are validated first, so a bad line stops the run before any work; `checked` is what
    `check_run` returned if the caller already ran it (the CLI does, before loading the model). With
    `resume` (the default) a run continues from the newest checkpoint in `output_dir`; without it, that
    folder's old checkpoints and log are deleted first, so no later run can resume from them. `on_step` sees
    each step's record.
    """
    checked = checked or check_run(config)
    manifest, val_manifest = checked.manifest, checked.val_manifest
    output_dir = Path(config.output_dir)
    device = model.precision.device
    accelerator = Accelerator(
        mixed_precision=choose_mixed_precision(config.mixed_precision, device), cpu=device.type == "cpu"
    )
    if accelerator.num_processes > 1 and not _same_device(device, accelerator.device):
        raise ValueError(
            f"the model is on {device} but this process trains on {accelerator.device}; "
            "load it with device=accelerate.PartialState().device (the CLI does)"
        )
    set_seed(config.seed)
    if config.image_size is not None:  # before anything reads the vision weights, a resumed state included
        set_image_size(model, config.task, config.image_size)
    trainable = prepare_trainable(
        model,
        config.task,
        train_vision=config.train_vision,
        lora=config.lora,
        gradient_checkpointing=config.gradient_checkpointing,
    )
    # ITC/ITM need 2 examples; accelerate fills every process's batches when there are several processes.
    smallest = 2 if config.task == "retrieval" and accelerator.num_processes == 1 else 1
    dataset = TaskDataset(manifest, model.vqa_template, config.caption_prompt)
    loader = make_loader(dataset, config.batch_size, config.num_workers, config.seed, smallest)
    if loader.batch_sampler.merges_last and accelerator.is_main_process:
        print(
            f"retrieval: {len(dataset)} examples in batches of {config.batch_size} would leave a last batch of "
            f"one, which has no in-batch negative; it is merged into the batch before it",
            file=sys.stderr,
        )
    sampler = loader.batch_sampler.sampler  # accelerate wraps the loader; the epoch still goes to our sampler
    optimizer = accelerator.prepare(_adamw(trainable, config))
    loader = accelerator.prepare(loader)
    updates_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer.optimizer, config.warmup_steps, updates_per_epoch * config.epochs
    )
    accelerator.register_for_checkpointing(scheduler)
    log = _Log(output_dir / LOG_FILE, accelerator.is_main_process)
    progress = Progress(step=0, epoch=0, batches_done=0, log_records=0)
    if not config.resume and accelerator.is_main_process:
        for removed in clear_checkpoints(output_dir):
            print(f"--no-resume: deleted {removed} of the previous run", file=sys.stderr)
    accelerator.wait_for_everyone()
    checkpoint = latest_checkpoint(output_dir) if config.resume else None
    if checkpoint is not None:
        progress = load_checkpoint(accelerator, checkpoint, trainable.parameters, config.resumable_settings())
        if accelerator.is_main_process:  # stderr: stdout carries only results (the CLI's --json)
            print(f"resumed from {checkpoint} (step {progress.step})", file=sys.stderr)
    log.truncate(progress.log_records)
    run = _Run(model, config, accelerator, trainable, optimizer, scheduler, log, on_step)
    run.fit(loader, sampler, progress, updates_per_epoch, val_manifest)
    trainable.eval_mode()  # the model goes back to the caller ready for inference
    if accelerator.is_main_process:
        trainable.merge_lora()
        _save_model(model, config.task, output_dir)
        _save_figure(log.records, output_dir / FIGURE_FILE)
    accelerator.wait_for_everyone()
    return TrainingResult(output_dir, log.records, run.step)


@dataclass(frozen=True)
class CheckedRun:
    """What `check_run` validated: the manifests' examples, ready for `train`."""

    manifest: Manifest
    val_manifest: Manifest | None


def check_run(config: TrainingConfig) -> CheckedRun:
    """Everything about a run that can be checked before a model loads: settings, the output folder (a
    folder we can write), both manifests (every line, every image as training will load it) and, when
    resuming, that the newest checkpoint was made with the same settings."""
    config.check()
    output_dir = check_output_dir(config.output_dir)
    manifest = read_manifest(config.train_manifest, config.task)
    val_manifest = read_manifest(config.val_manifest, config.task) if config.val_manifest else None
    if config.task == "retrieval" and len(manifest) < 2:
        raise ValueError(
            f"{config.train_manifest}: retrieval training needs at least 2 examples (in-batch negatives); "
            f"it has {len(manifest)}"
        )
    checkpoint = latest_checkpoint(output_dir) if config.resume else None
    if checkpoint is not None:
        check_resumable(checkpoint, config.resumable_settings())
    return CheckedRun(manifest, val_manifest)


def _same_device(first: torch.device, second: torch.device) -> bool:
    """`cpu` and `cpu:0` are one device; `cuda` means the current GPU, which accelerate names with its index."""
    if first.type != second.type:
        return False
    if first.type == "cpu":
        return True
    current = torch.cuda.current_device() if first.type == "cuda" else 0
    return (first.index if first.index is not None else current) == (
        second.index if second.index is not None else current
    )


def _adamw(trainable: Trainable, config: TrainingConfig) -> torch.optim.AdamW:
    """AdamW; as in LAVIS, biases and norm weights (1-D parameters) get no weight decay."""
    decay = [p for p in trainable.parameters.values() if p.ndim >= 2]
    no_decay = [p for p in trainable.parameters.values() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.999))


class _Run:
    """One training run's moving parts, so the loop reads top to bottom."""

    def __init__(
        self,
        model: Blip2Backend,
        config: TrainingConfig,
        accelerator: Accelerator,
        trainable: Trainable,
        optimizer: Any,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        log: _Log,
        on_step: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.model = model
        self.config = config
        self.accelerator = accelerator
        self.trainable = trainable
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.log = log
        self.on_step = on_step
        self.step = 0

    def fit(
        self,
        loader: Any,
        sampler: EpochShuffle,
        progress: Progress,
        updates_per_epoch: int,
        val_manifest: Manifest | None,
    ) -> None:
        config, accelerator = self.config, self.accelerator
        self.step = progress.step
        total = updates_per_epoch * config.epochs
        bar = tqdm(
            total=total,
            initial=self.step,
            desc=f"fine-tuning ({config.task})",
            disable=not accelerator.is_main_process or not live_progress(),
        )
        for epoch in range(progress.epoch, config.epochs):
            skip = progress.batches_done if epoch == progress.epoch else 0
            # accelerate's loaders re-apply their own epoch counter to the sampler when iteration starts,
            # and a loader made by skip_first_batches starts that counter at 0: set it on every one.
            loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            batches.set_epoch(epoch)
            self.trainable.train_mode()
            window: list[dict[str, float]] = []
            for index, batch in enumerate(batches, start=skip):
                window.append(self._backward(batch))
                boundary = (index + 1) % config.gradient_accumulation_steps == 0 or index + 1 == len(loader)
                if not boundary:
                    continue
                record = {"step": self.step + 1, "epoch": epoch, "lr": self._update()}
                record |= self._mean(window)
                window = []
                self.log.append(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if self.on_step is not None:
                    self.on_step(record)
                if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                    self._checkpoint(Progress(self.step, epoch, index + 1, len(self.log.records)))
            if val_manifest is not None:
                self._validate(val_manifest, epoch)
        bar.close()
        self._check_in_sync()
        self._checkpoint(Progress(self.step, config.epochs, 0, len(self.log.records)))

    def _check_in_sync(self) -> None:
        """Every process must end with the same weights; a drift means gradients were not averaged."""
        if self.accelerator.num_processes == 1:
            return
        checksum = torch.stack([p.detach().double().sum() for p in self.trainable.parameters.values()]).sum()
        gathered = self.accelerator.gather(checksum.reshape(1))
        if not torch.allclose(gathered, gathered[0].expand_as(gathered), rtol=1e-6):
            raise RuntimeError(f"the processes' weights drifted apart (checksums {gathered.tolist()})")

    def _backward(self, batch: dict[str, list[Any]]) -> dict[str, float]:
        with self.accelerator.autocast():
            if self.config.task == "retrieval":
                losses = self.model.retrieval_loss(batch["image"], batch["text"])
            else:
                total = self.model.lm_loss(
                    batch["image"], batch["prompt"], batch["target"], self.config.max_length
                )
                losses = {"total": total}
        self.accelerator.backward(losses["total"] / self.config.gradient_accumulation_steps)
        values = {name: value.detach().float() for name, value in losses.items()}
        return {"loss" if name == "total" else name: value for name, value in values.items()}

    def _update(self) -> float:
        """Average gradients over processes, clip if asked, step optimizer and schedule; returns the lr used."""
        learning_rate = self.optimizer.param_groups[0]["lr"]
        parameters = [p for p in self.trainable.parameters.values() if p.grad is not None]
        if self.accelerator.num_processes > 1:
            for parameter in parameters:
                parameter.grad = self.accelerator.reduce(parameter.grad, reduction="mean")
        if self.config.max_grad_norm is not None:
            self.accelerator.clip_grad_norm_(parameters, self.config.max_grad_norm)
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:  # fp16 overflow: the scaler skipped the update
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return learning_rate

    def _mean(self, window: list[dict[str, float]]) -> dict[str, float]:
        """Each loss averaged over the accumulation window and over processes."""
        means = {key: torch.stack([item[key] for item in window]).mean() for key in window[0]}
        reduced = self.accelerator.reduce(means, reduction="mean")
        return {key: float(value) for key, value in reduced.items()}

    def _validate(self, manifest: Manifest, epoch: int) -> None:
        """Validation runs on the main process only; the others wait."""
        if self.accelerator.is_main_process:
            self.trainable.eval_mode()
            settings = GenerationSettings(num_beams=1, max_new_tokens=self.config.max_new_tokens)
            metrics = validate(self.model, manifest, settings, self.config.batch_size)
            record = {"step": self.step, "epoch": epoch, "split": "val"} | metrics
            self.log.append(record)
            # stdout: a notebook shows stderr as an error; the CLI sends stdout to stderr while a command runs.
            print(f"epoch {epoch + 1} validation: " + " | ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
            self.trainable.train_mode()
        self.accelerator.wait_for_everyone()

    def _checkpoint(self, progress: Progress) -> None:
        save_checkpoint(
            self.accelerator,
            Path(self.config.output_dir),
            self.trainable.parameters,
            progress,
            self.config.resumable_settings(),
            self.config.keep_checkpoints,
        )


class _Log:
    """The JSONL log in the output folder: one record per optimizer step and per validation."""

    def __init__(self, path: Path, writer: bool) -> None:
        self.path = path
        self.writer = writer
        self.records: list[dict[str, Any]] = []

    def truncate(self, count: int) -> None:
        """Keep the first `count` records, those the checkpoint had seen: the resumed run repeats the rest."""
        if self.path.exists():
            self.records = [json.loads(line) for line in self.path.read_text().splitlines()[:count]]
        if self.writer:
            with staged_file(self.path) as temporary:
                temporary.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.writer:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def _save_figure(history: list[dict[str, Any]], path: Path) -> None:
    """The loss and validation curves next to the model, written under a temporary name first."""
    with staged_file(path) as temporary:
        training_curves(history).savefig(temporary, format="png", dpi=100)


def _save_model(model: Blip2Backend, task: str, output_dir: Path) -> None:
    """Write the HF-layout model: files are staged, then moved in with config.json last, the loader's marker."""
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=output_dir))
    model.save_pretrained(task, staging)
    (output_dir / "config.json").unlink(missing_ok=True)
    files = sorted(staging.iterdir(), key=lambda path: path.name == "config.json")
    for file in files:
        os.replace(file, output_dir / file.name)
    staging.rmdir()
