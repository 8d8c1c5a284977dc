"""Fine-tuning through the backend training primitives: losses, freezing, LoRA, checkpoints, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import GREEDY, load_blip2, sample_image, sample_path
from helpers.finetune import LoraSettings, ManifestError, TrainingConfig, train
from helpers.finetune.checkpoints import latest_checkpoint
from helpers.finetune.trainable import prepare_trainable
from helpers.loading import BACKENDS
from helpers.viz import training_curves

NAMES = ("cat", "rocket", "coffee", "astronaut")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Four photos in images/ and one manifest per task, with paths relative to the manifests."""
    (tmp_path / "images").mkdir()
    for name in NAMES:
        shutil.copy(sample_path(name), tmp_path / "images" / f"{name}.jpg")
    (tmp_path / "caption.tsv").write_text("".join(f"images/{n}.jpg\ta photo of a {n}\n" for n in NAMES))
    (tmp_path / "vqa.tsv").write_text("".join(f"images/{n}.jpg\twhat is this?\t{n}\n" for n in NAMES))
    (tmp_path / "retrieval.tsv").write_text("".join(f"images/{n}.jpg\ta {n}\n" for n in NAMES))
    return tmp_path


def _fresh(backend: str = "hf"):
    return load_blip2("offline", backend=backend, verbose=False)


def _config(dataset: Path, task: str, **overrides) -> TrainingConfig:
    settings = {
        "task": task,
        "train_manifest": dataset / f"{task}.tsv",
        "output_dir": dataset / f"out-{task}",
        "epochs": 1,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "warmup_steps": 1,
        "checkpoint_every": None,
    }
    return TrainingConfig(**(settings | overrides))


def test_decoder_only_batch_labels_only_the_target_and_eos() -> None:
    model = _fresh()
    tokenizer = model.processor.tokenizer
    batch = model._decoder_only_batch(["", "Question: what is it? Answer:"], ["a cat", "red"], None)
    target_ids = tokenizer(" red", add_special_tokens=False)["input_ids"]
    labelled = batch["labels"][1][batch["labels"][1] != -100].tolist()
    end = model.model.config.text_config.eos_token_id  # the newline generation stops at, as in LAVIS
    assert labelled == [*target_ids, end]
    queries = model.processor.num_query_tokens
    assert (batch["input_ids"][:, :queries] == model.model.config.image_token_id).all()
    assert (batch["labels"][:, :queries] == -100).all()
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # row 0 is right-padded
    prompt = "Question: what is it? Answer:"
    prompt_tokens = len(tokenizer(prompt)["input_ids"])
    capped = model._decoder_only_batch([prompt], ["a very long answer indeed"], prompt_tokens + 3)
    text_tokens = int(capped["attention_mask"].sum()) - queries
    assert text_tokens == prompt_tokens + 3 and capped["labels"][0, -1] == end


@pytest.mark.parametrize("backend", BACKENDS)
def test_lm_loss_trains_the_qformer_side_and_leaves_vit_and_llm_frozen(backend: str) -> None:
    model = _fresh(backend)
    trainable = prepare_trainable(model, "caption")
    parts = trainable.parts
    frozen_before = {
        name: p.detach().clone()
        for module in [*parts.vision, parts.language_model]
        for name, p in module.named_parameters()
    }
    images = [sample_image(name) for name in NAMES[:2]]
    optimizer = torch.optim.Adam(trainable.parameters.values(), lr=3e-3)
    trainable.train_mode()
    losses = []
    for _ in range(8):
        loss = model.lm_loss(images, ["", ""], ["a photo of a cat", "a rocket on a pad"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[1:]) < losses[0] - 0.1, losses  # the random miniature's floor is near 5.8 nats
    for module in [*parts.vision, parts.language_model]:
        for name, parameter in module.named_parameters():
            assert parameter.grad is None and torch.equal(parameter, frozen_before[name]), name
    assert all(p.dtype == torch.float32 for p in trainable.parameters.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_retrieval_loss_has_itc_and_itm_and_needs_two_pairs(backend: str) -> None:
    model = _fresh(backend)
    prepare_trainable(model, "retrieval").train_mode()
    images = [sample_image(name) for name in NAMES[:3]]
    losses = model.retrieval_loss(images, ["a cat", "a rocket", "a coffee"], torch.Generator().manual_seed(0))
    assert set(losses) == {"itc", "itm", "total"}
    assert torch.allclose(losses["total"], losses["itc"] + losses["itm"])
    losses["total"].backward()
    assert model.trainable_parts("retrieval").root.itm_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2 pairs"):
        model.retrieval_loss(images[:1], ["a cat"])


def test_caption_run_validates_logs_and_saves_a_model_every_backend_loads(dataset: Path) -> None:
    model = _fresh()
    before = model.model.language_projection.weight.detach().clone()
    config = _config(dataset, "caption", epochs=2, val_manifest=dataset / "caption.tsv", checkpoint_every=1)
    result = train(model, config)
    assert result.steps == 4 and len(result.losses) == 4
    validation = [record for record in result.history if record.get("split") == "val"]
    assert [record["epoch"] for record in validation] == [0, 1] and "CIDEr" in validation[0]
    logged = [json.loads(line) for line in (config.output_dir / "log.jsonl").read_text().splitlines()]
    assert logged == result.history
    assert (config.output_dir / "training.png").stat().st_size > 0
    figure = training_curves(result.history)
    assert len(figure.axes[0].lines) == 1 and len(figure.axes[0].lines[0].get_xdata()) == 4  # loss per step
    assert [p.name for p in (config.output_dir / "checkpoints").iterdir()] == [
        "step-0000004",
        "step-0000003",
    ][::-1]
    assert not torch.equal(model.model.language_projection.weight, before)
    for backend in BACKENDS:
        reloaded = load_blip2("offline", backend=backend, model_id=str(config.output_dir), verbose=False)
        image = sample_image("cat")
        assert reloaded.caption(image, GREEDY) == model.caption(image, GREEDY)


def test_an_interrupted_run_resumes_exactly_where_it_stopped(dataset: Path) -> None:
    settings = {"epochs": 2, "batch_size": 1, "checkpoint_every": 3, "gradient_accumulation_steps": 1}
    whole = train(_fresh(), _config(dataset, "caption", output_dir=dataset / "whole", **settings))

    def crash_at_step_5(record: dict) -> None:
        if record["step"] == 5:
            raise KeyboardInterrupt

    interrupted = _config(dataset, "caption", output_dir=dataset / "interrupted", **settings)
    with pytest.raises(KeyboardInterrupt):
        train(_fresh(), interrupted, on_step=crash_at_step_5)
    assert latest_checkpoint(interrupted.output_dir).name == "step-0000003"
    resumed = train(_fresh(), interrupted)
    assert resumed.steps == whole.steps == 8
    assert resumed.history == whole.history  # same losses and learning rates at every step, logged once
    final_whole = load_file(dataset / "whole" / "model.safetensors")
    final_resumed = load_file(interrupted.output_dir / "model.safetensors")
    assert all(torch.equal(final_whole[key], final_resumed[key]) for key in final_whole)


def test_resume_refuses_a_checkpoint_made_with_other_settings(dataset: Path) -> None:
    config = _config(dataset, "caption", checkpoint_every=1)
    train(_fresh(), config)
    with pytest.raises(ValueError, match=r"learning_rate: 0\.001 -> 0\.01"):
        train(_fresh(), _config(dataset, "caption", checkpoint_every=1, learning_rate=1e-2))


def test_gradient_accumulation_takes_one_step_per_window(dataset: Path) -> None:
    result = train(_fresh(), _config(dataset, "vqa", batch_size=1, gradient_accumulation_steps=3))
    assert result.steps == 2  # 4 batches: a window of 3, then the epoch's last batch alone


def test_lora_adapters_are_merged_into_a_plain_hf_checkpoint(dataset: Path) -> None:
    model = _fresh()
    llm_before = model.model.language_model.lm_head.weight.detach().clone()
    q_before = model.model.language_model.model.decoder.layers[0].self_attn.q_proj.weight.detach().clone()
    config = _config(dataset, "vqa", lora=LoraSettings(rank=4), learning_rate=1e-2, checkpoint_every=1)
    train(model, config)
    checkpoint = load_file(latest_checkpoint(config.output_dir) / "trainable.safetensors")
    assert any("lora_A" in key for key in checkpoint)
    saved = load_file(config.output_dir / "model.safetensors")
    assert not any("lora" in key for key in saved)
    q_after = saved["language_model.model.decoder.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(q_after, q_before)  # the adapters were folded into the frozen weight
    assert torch.equal(model.model.language_model.lm_head.weight, llm_before)
    reloaded = load_blip2("offline", model_id=str(config.output_dir), verbose=False)
    image = sample_image("rocket")
    assert reloaded.ask(image, "what is this?", settings=GREEDY) == model.ask(
        image, "what is this?", settings=GREEDY
    )


def test_retrieval_run_reports_recall_and_replaces_the_retrieval_checkpoint(dataset: Path) -> None:
    model = _fresh()
    config = _config(dataset, "retrieval", val_manifest=dataset / "retrieval.tsv", train_vision=True)
    result = train(model, config)
    validation = [record for record in result.history if record.get("split") == "val"]
    assert {"image->text R@1", "text->image R@5"} <= set(validation[0])
    for backend in BACKENDS:
        reloaded = load_blip2("offline", backend=backend, model_id=str(config.output_dir), verbose=False)
        assert reloaded.retrieval_model == str(config.output_dir)
        images, texts = [sample_image(n) for n in NAMES[:2]], ["a cat", "a rocket"]
        assert torch.allclose(reloaded.itc_scores(images, texts), model.itc_scores(images, texts), atol=1e-5)


def test_a_bad_manifest_stops_the_run_before_anything_is_written(dataset: Path) -> None:
    (dataset / "caption.tsv").write_text("images/cat.jpg\ta cat\nimages/nothing.jpg\ta ghost\n")
    config = _config(dataset, "caption")
    with pytest.raises(ManifestError, match=r"caption\.tsv:2: image not found"):
        train(_fresh(), config)
    assert not config.output_dir.exists()


def test_impossible_settings_are_refused(dataset: Path) -> None:
    with pytest.raises(ValueError, match="batch_size=0"):
        _config(dataset, "caption", batch_size=0).check()
    with pytest.raises(ValueError, match="needs batch_size >= 2"):
        _config(dataset, "retrieval", batch_size=1).check()
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        train(_fresh(), _config(dataset, "caption", mixed_precision="fp16"))
    with pytest.raises(ValueError, match="has none"):
        prepare_trainable(_fresh(), "retrieval", lora=LoraSettings())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_fine_tunes_and_its_output_loads_in_every_backend(dataset: Path, backend: str) -> None:
    model = _fresh(backend)
    config = _config(dataset, "vqa", output_dir=dataset / f"vqa-{backend}")
    result = train(model, config)
    assert result.steps == 2 and all(loss > 0 for loss in result.losses)
    image = sample_image("coffee")
    expected = model.ask(image, "what is this?", settings=GREEDY)
    for other in BACKENDS:
        reloaded = load_blip2("offline", backend=other, model_id=str(config.output_dir), verbose=False)
        assert reloaded.ask(image, "what is this?", settings=GREEDY) == expected, other
