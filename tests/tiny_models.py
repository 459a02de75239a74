"""Tiny random models of the real teacher classes, saved in their real on-disk layouts."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch


def tiny_unet2d(**overrides):
    from diffusers import UNet2DModel

    config = dict(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )
    return UNet2DModel(**{**config, **overrides}).eval()


def tiny_unet2d_condition(cross_attention_dim: int = 12):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=2, norm_num_groups=4,
    ).eval()


def save_tiny_ddpm(folder: Path, prediction_type: str = "epsilon") -> Path:
    """Files at the top of the folder, as google/ddpm-cifar10-32 is published."""
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    tiny_unet2d().save_pretrained(folder)
    DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type).save_pretrained(folder)
    return folder


def tiny_clip_tokenizer(folder: Path):
    """A CLIP tokenizer over single letters, written from a vocabulary made here."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)


def save_tiny_stable_diffusion(folder: Path) -> Path:
    """A StableDiffusionPipeline in diffusers layout: UNet, VAE, CLIP text encoder, tokenizer, PNDM scheduler."""
    import tempfile

    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(Path(tempfile.mkdtemp()))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=12, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=8, projection_dim=12,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), norm_num_groups=4, sample_size=8,
    )
    scheduler = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_unet2d_condition(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path) -> Path:
    """A CLIPModel with its processor (image processor + tokenizer), as evaluate.clip_model expects."""
    import tempfile

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(Path(tempfile.mkdtemp()))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=12, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=12, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=8, patch_size=4),
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder
