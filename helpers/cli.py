"""`python -m helpers`: captioning, VQA, retrieval and fine-tuning from the shell, for scripts and batch jobs.

    python -m helpers caption photo.jpg other.jpg --max-new-tokens 20
    python -m helpers vqa photo.jpg "What colour is the bus?"
    python -m helpers retrieval photo.jpg "a red bus" "a cat" --json
    python -m helpers check-manifest train.tsv --task caption
    python -m helpers train train.tsv --task caption --output-dir runs/coco --epochs 5 --val-manifest val.tsv
    accelerate launch -m helpers train ...          # several GPUs (or --cpu --num_processes 2)

Results go to stdout (text, or JSON with --json), and nothing else does: progress bars, the profile report,
"resumed from" and validation lines go to stderr, so `--json` output always parses. Exit codes: 0 success,
2 bad input (a missing image or model folder, a bad manifest line, an unknown option or device, a prompt
too long for the model), with one line naming the input and the fix on stderr and no traceback (a bad
manifest also lists each bad line under it); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from helpers.backends.base import TRAINING_TASKS, Blip2Backend
from helpers.generation import GenerationSettings
from helpers.images import ImageLoadError, load_image, load_images
from helpers.loading import BACKENDS, load_blip2
from helpers.profiles import choose_profile
from helpers.user_input import UserInputError, check_device, check_model_source, check_top_k

BAD_INPUT = 2
"""The exit code for input the user can fix; argparse uses it for usage errors too."""

_USER_ERRORS = (UserInputError, ValueError, FileNotFoundError, ImageLoadError, MemoryError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # whatever a library prints, stdout keeps only results
            result = args.run(args)
    except _USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    if result is not None:
        _emit(result, args.json)
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default="auto", help="offline, t4, a100, ... (default: auto)")
    common.add_argument("--backend", default="hf", choices=BACKENDS)
    common.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    common.add_argument(
        "--model-source",
        default=None,
        help="hub id or folder replacing the profile's checkpoint, e.g. a fine-tuned --output-dir",
    )
    common.add_argument("--json", action="store_true", help="print results as JSON")
    generation = argparse.ArgumentParser(add_help=False)
    generation.add_argument("--max-new-tokens", type=int, default=30)
    generation.add_argument("--num-beams", type=int, default=5, help="1 for greedy decoding")

    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    caption = commands.add_parser("caption", parents=[common, generation], help="caption images")
    caption.add_argument("images", nargs="+", metavar="IMAGE", help="paths or URLs")
    caption.set_defaults(run=_caption)

    vqa = commands.add_parser("vqa", parents=[common, generation], help="answer a question about an image")
    vqa.add_argument("image", metavar="IMAGE")
    vqa.add_argument("question", metavar="QUESTION")
    vqa.set_defaults(run=_vqa)

    retrieval = commands.add_parser(
        "retrieval", parents=[common], help="rank texts for an image (ITC, then ITM)"
    )
    retrieval.add_argument("image", metavar="IMAGE")
    retrieval.add_argument("texts", nargs="+", metavar="TEXT")
    retrieval.add_argument(
        "--top-k", type=int, default=16, help="how many ITC leaders ITM re-ranks (0: ITC only)"
    )
    retrieval.set_defaults(run=_retrieval)

    check = commands.add_parser(
        "check-manifest", parents=[common], help="report every bad line of a manifest"
    )
    check.add_argument("manifest", metavar="MANIFEST")
    check.add_argument("--task", required=True, choices=TRAINING_TASKS)
    check.set_defaults(run=_check_manifest)

    train = commands.add_parser("train", parents=[common], help="fine-tune from a TSV manifest")
    _add_training_options(train)
    train.set_defaults(run=_train)
    return parser


def _add_training_options(train: argparse.ArgumentParser) -> None:
    from helpers.finetune import TrainingConfig

    defaults = TrainingConfig(task="caption", train_manifest="", output_dir="")
    train.add_argument("manifest", metavar="MANIFEST")
    train.add_argument("--task", required=True, choices=TRAINING_TASKS)
    train.add_argument("--output-dir", required=True)
    train.add_argument("--val-manifest", default=None)
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per process")
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    train.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    train.add_argument(
        "--gradient-accumulation-steps", type=int, default=defaults.gradient_accumulation_steps
    )
    train.add_argument("--max-length", type=int, default=defaults.max_length, help="text tokens per example")
    train.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="for validation")
    train.add_argument("--num-workers", type=int, default=defaults.num_workers)
    train.add_argument(
        "--mixed-precision", default=defaults.mixed_precision, choices=("auto", "no", "fp16", "bf16")
    )
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument(
        "--train-vision",
        action="store_true",
        help="also fine-tune the ViT, as the paper does for captioning, VQA and retrieval",
    )
    train.add_argument(
        "--caption-prompt",
        default=defaults.caption_prompt,
        help='text the captions continue (the paper\'s COCO fine-tuning: "a photo of"; default: none)',
    )
    train.add_argument(
        "--image-size",
        type=int,
        default=defaults.image_size,
        help="train at this image size (the paper: 364; hf backend; default: the checkpoint's)",
    )
    train.add_argument(
        "--lora-rank", type=int, default=0, help="LoRA adapters of this rank on the LLM (0: none)"
    )
    train.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument(
        "--no-resume",
        action="store_true",
        help="start over: first DELETES the previous run's checkpoints/ and log.jsonl in --output-dir, so no "
        "later run can resume from them (default: resume from the newest checkpoint, which must have been "
        "made with the same settings, epochs included)",
    )


def _load(args: argparse.Namespace, device: str | None = None) -> Blip2Backend:
    check_device(args.device)
    if args.model_source is not None:
        check_model_source(args.model_source, "--model-source")
    print(f"BLIP-2 | {choose_profile(args.profile)}", file=sys.stderr)
    return load_blip2(
        args.profile,
        backend=args.backend,
        device=device or args.device,
        model_id=args.model_source,
        verbose=False,
    )


def _settings(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)


def _caption(args: argparse.Namespace) -> list[dict[str, str]]:
    images, settings = load_images(args.images), _settings(args)  # bad input fails before the model loads
    captions = _load(args).caption(images, settings)
    return [
        {"image": image, "caption": caption} for image, caption in zip(args.images, captions, strict=True)
    ]


def _vqa(args: argparse.Namespace) -> dict[str, str]:
    image, settings = load_image(args.image), _settings(args)
    answer = _load(args).ask(image, args.question, settings=settings)[0]
    return {"image": args.image, "question": args.question, "answer": answer}


def _retrieval(args: argparse.Namespace) -> list[dict[str, Any]]:
    image, top_k = load_image(args.image), check_top_k(args.top_k)
    ranked = _load(args).rank_texts(image, args.texts, top_k=top_k)
    return [asdict(item) for item in ranked]


def _check_manifest(args: argparse.Namespace) -> dict[str, Any]:
    from helpers.finetune import ManifestError, check_manifest

    examples, problems = check_manifest(args.manifest, args.task)
    if problems:
        raise ManifestError(problems[0].path, problems)
    return {"manifest": args.manifest, "task": args.task, "examples": len(examples)}


def _train(args: argparse.Namespace) -> dict[str, Any] | None:
    from accelerate import PartialState

    from helpers.finetune import LoraSettings, TrainingConfig, check_run, train

    config = TrainingConfig(
        task=args.task,
        train_manifest=args.manifest,
        output_dir=args.output_dir,
        val_manifest=args.val_manifest,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_length=args.max_length,
        max_new_tokens=args.max_new_tokens,
        num_workers=args.num_workers,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        train_vision=args.train_vision,
        caption_prompt=args.caption_prompt,
        image_size=args.image_size,
        lora=LoraSettings(rank=args.lora_rank) if args.lora_rank > 0 else None,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        resume=not args.no_resume,
    )
    check_device(args.device)
    checked = check_run(config)  # settings, output folder, manifests and resume, before the model loads
    # Under `accelerate launch` every process loads the model onto its own device; on a machine without a
    # GPU, accelerate makes the processes a CPU (gloo) group only when told up front that they run on CPU.
    cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    state = PartialState(cpu=cpu)
    model = _load(args, str(state.device) if args.device == "auto" else args.device)
    result = train(model, config, checked=checked)
    if not state.is_main_process:
        return None
    losses = result.losses
    return {
        "output_dir": str(result.output_dir),
        "steps": result.steps,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "validation": [record for record in result.history if record.get("split") == "val"],
    }


def _emit(result: Any, as_json: bool) -> None:
    """JSON, or plain lines a shell pipeline can cut: one result per line, fields separated by TABs."""
    if as_json:
        print(json.dumps(result, indent=2))
        return
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        print("\t".join(_plain(value) for value in row.values()))


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)
