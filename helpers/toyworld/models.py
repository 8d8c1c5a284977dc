"""The miniature's architecture: the real BLIP-2 classes and configs, with only the sizes shrunk.

Activations and layer-norm epsilons stay at the config defaults so the LAVIS backend can rebuild the same
EVA-ViT, BERT Q-Former and OPT from these weights exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from transformers import (
    BertTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    GPT2Tokenizer,
    OPTConfig,
    OPTForCausalLM,
)

from helpers.offline import blip2_image_processor
from helpers.toyworld.world import IMAGE_SIZE


@dataclass(frozen=True)
class Sizes:
    """Widths and depths of the three transformers (ViT-g: 1408 wide, 39 deep; Q-Former: 768, 12)."""

    hidden: int = 64
    vision_layers: int = 3
    qformer_layers: int = 4
    lm_hidden: int = 96
    lm_layers: int = 3
    num_query_tokens: int = 8
    patch_size: int = 56
    projection: int = 64

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def vision_config(sizes: Sizes) -> Blip2VisionConfig:
    return Blip2VisionConfig(
        hidden_size=sizes.hidden,
        intermediate_size=2 * sizes.hidden,
        num_attention_heads=4,
        num_hidden_layers=sizes.vision_layers,
        image_size=IMAGE_SIZE,
        patch_size=sizes.patch_size,
        initializer_range=0.02,  # the config's 1e-10 suits loading pretrained weights, not training from scratch
    )


QFORMER_INIT_STD = 0.05
"""Initial weight (and query) scale of the Q-Former. BERT's 0.02 suits its width of 768; at width 64 it keeps
the cross-attention uniform for hundreds of steps, so no query learns to count the objects."""


def qformer_config(sizes: Sizes, vocab_size: int, text_input: bool) -> Blip2QFormerConfig:
    """Cross-attention every other block as in the real Q-Former; the ViT's width is its encoder width."""
    return Blip2QFormerConfig(
        use_qformer_text_input=text_input,
        vocab_size=vocab_size,
        hidden_size=sizes.hidden,
        intermediate_size=2 * sizes.hidden,
        num_attention_heads=4,
        num_hidden_layers=sizes.qformer_layers,
        cross_attention_frequency=2,
        encoder_hidden_size=sizes.hidden,
        max_position_embeddings=64,
        initializer_range=QFORMER_INIT_STD,
    )


def opt_config(sizes: Sizes, tokenizer: GPT2Tokenizer) -> OPTConfig:
    return OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.lm_hidden,
        ffn_dim=2 * sizes.lm_hidden,
        num_hidden_layers=sizes.lm_layers,
        num_attention_heads=4,
        max_position_embeddings=128,
        word_embed_proj_dim=sizes.lm_hidden,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=newline_id(tokenizer),
        dropout=0.0,
    )


def newline_id(tokenizer: GPT2Tokenizer) -> int:
    """The end-of-text token of Salesforce's BLIP-2 OPT configs: a newline (LAVIS stops OPT there too)."""
    return tokenizer("\n", add_special_tokens=False).input_ids[0]


def caption_processor(tokenizer: GPT2Tokenizer, sizes: Sizes) -> Blip2Processor:
    """Processor of the generation model; it adds the <image> placeholder token to the tokenizer."""
    return Blip2Processor(
        blip2_image_processor(IMAGE_SIZE), tokenizer, num_query_tokens=sizes.num_query_tokens
    )


def retrieval_processor(tokenizer: BertTokenizer, sizes: Sizes) -> Blip2Processor:
    return Blip2Processor(
        blip2_image_processor(IMAGE_SIZE), tokenizer, num_query_tokens=sizes.num_query_tokens
    )


def language_model(sizes: Sizes, tokenizer: GPT2Tokenizer) -> OPTForCausalLM:
    return OPTForCausalLM(opt_config(sizes, tokenizer))


def retrieval_model(sizes: Sizes, tokenizer: BertTokenizer) -> Blip2ForImageTextRetrieval:
    """Stage 1's model: ViT, Q-Former with its text side, ITC projections and ITM head (no LM)."""
    config = Blip2Config(
        vision_config=vision_config(sizes),
        qformer_config=qformer_config(sizes, len(tokenizer), text_input=True),
        text_config=OPTConfig(
            vocab_size=8, hidden_size=8, ffn_dim=8, num_hidden_layers=1, num_attention_heads=1
        ),
        num_query_tokens=sizes.num_query_tokens,
        image_text_hidden_size=sizes.projection,
    )
    return Blip2ForImageTextRetrieval(config)


def generation_model(sizes: Sizes, processor: Blip2Processor) -> Blip2ForConditionalGeneration:
    """Stage 2's model: ViT, the Q-Former's query side, a projection and the OPT language model."""
    tokenizer = processor.tokenizer
    config = Blip2Config(
        vision_config=vision_config(sizes),
        qformer_config=qformer_config(sizes, len(tokenizer), text_input=False),
        text_config=opt_config(sizes, tokenizer),
        num_query_tokens=sizes.num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids(processor.image_token.content),
    )
    model = Blip2ForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    return model
