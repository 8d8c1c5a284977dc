"""Cross-attention maps: the kit's recorded probabilities equal what the real Q-Former computes."""

from __future__ import annotations

import pytest
import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from helpers import offline
from helpers.anatomy import recorded_cross_attentions


def test_recorded_cross_attentions_equal_eager_attention_weights(samples) -> None:
    path = offline.checkpoint_path(offline.CAPTION)
    model = Blip2ForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()
    pixels = Blip2Processor.from_pretrained(path).image_processor(samples[:2], return_tensors="pt")[
        "pixel_values"
    ]
    eager: list[torch.Tensor] = []
    handles = [
        layer.crossattention.attention.register_forward_hook(lambda _m, _i, output: eager.append(output[1]))
        for layer in model.qformer.encoder.layer
        if layer.has_cross_attention
    ]
    try:
        with torch.no_grad(), recorded_cross_attentions(model.qformer) as ours:
            model.get_image_features(pixel_values=pixels)
    finally:
        for handle in handles:
            handle.remove()
    config = model.config
    patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1  # + [CLS]
    assert len(ours) == len(eager) == config.qformer_config.num_hidden_layers // 2
    for mine, theirs in zip(ours, eager, strict=True):
        assert mine.shape == (2, config.qformer_config.num_attention_heads, config.num_query_tokens, patches)
        assert torch.allclose(mine, theirs, atol=1e-6)
        assert torch.allclose(mine.sum(dim=-1), torch.ones(()), atol=1e-5)


def test_recording_stops_when_the_context_ends(samples) -> None:
    path = offline.checkpoint_path(offline.CAPTION)
    model = Blip2ForConditionalGeneration.from_pretrained(path).eval()
    pixels = Blip2Processor.from_pretrained(path).image_processor(samples[:1], return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        with recorded_cross_attentions(model.qformer) as records:
            model.get_image_features(pixel_values=pixels)
        count = len(records)
        model.get_image_features(pixel_values=pixels)
    assert count == model.config.qformer_config.num_hidden_layers // 2 and len(records) == count


def test_recorded_cross_attentions_read_lavis_qformer_too() -> None:
    """LAVIS's Q-Former BERT (what the LAVIS backend runs) passes its arguments positionally: same numbers."""
    from helpers.backends import lavis_compat

    lavis_compat.apply()
    qformer = pytest.importorskip("lavis.models.blip2_models.Qformer")
    config = qformer.BertConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128
    )
    config.encoder_width, config.add_cross_attention, config.cross_attention_freq, config.query_length = (
        48,
        True,
        2,
        8,
    )
    model = qformer.BertModel(config, add_pooling_layer=False).eval()
    queries, image = torch.randn(2, 8, 64), torch.randn(2, 10, 48)
    with torch.no_grad(), recorded_cross_attentions(model) as ours:
        output = model(
            query_embeds=queries, encoder_hidden_states=image, output_attentions=True, return_dict=True
        )
    theirs = [output.cross_attentions[index] for index in (0, 2)]  # LAVIS records them on layers 0 and 2
    assert len(ours) == 2
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs, strict=True))
