"""Tiny random models of the real teacher classes, saved in their real on-disk layouts."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

TINY_KDIFFUSION = dict(channels=[8, 8], depths=[1, 1], mapping_width=16)  # TeacherTrainParams' names for its network


def tiny_kdiffusion_config(classes: int = 3, label_dropout: float = 0.0, mapping_width: int = 16, widths=(8, 8)):
    """The tests' k-diffusion teacher config: 1x8x8 images, two levels, EDM's sigmas."""
    from dmdlib.teachers.loading import kdiffusion_config

    return kdiffusion_config(1, 8, list(widths), [1, 1], mapping_width, classes, 0.5, 0.002, 80.0, label_dropout)


def tiny_kdiffusion(seed: int = 0, **config):
    """The tests' k-diffusion teacher (`tiny_kdiffusion_config(**config)`), its weights drawn from torch seed `seed`."""
    from dmdlib.teachers.loading import build_kdiffusion

    torch.manual_seed(seed)
    return build_kdiffusion(tiny_kdiffusion_config(**config))


def tiny_unet2d(**overrides):
    from diffusers import UNet2DModel

    config = dict(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    return UNet2DModel(**{**config, **overrides}).eval()


def tiny_unet2d_condition(cross_attention_dim: int = 12):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,
        norm_num_groups=4,
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
    tokens = (
        ["<|startoftext|>", "<|endoftext|>"]
        + list(string.ascii_lowercase)
        + [c + "</w>" for c in string.ascii_lowercase]
    )
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
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=12,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
            projection_dim=12,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8,),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=4,
        sample_size=8,
    )
    scheduler = PNDMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True, steps_offset=1
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=tiny_unet2d_condition(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
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
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=12,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=12, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=4
        ),
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(folder)
    return folder


def _tiny_clip_text(tokenizer, hidden: int = 8, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=8,
        projection_dim=hidden,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def tiny_t5(folder: Path, d_model: int = 16):
    """A T5 encoder and a fast T5 tokenizer over single letters (a unigram vocabulary made here, saved as
    tokenizer.json)."""
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + c, -1.0) for c in string.ascii_lowercase]
    tokenizer = T5TokenizerFast(vocab=vocab + [(c, -2.0) for c in string.ascii_lowercase], extra_ids=0)
    tokenizer.save_pretrained(folder)  # written and read back, as a downloaded one would be
    tokenizer = T5TokenizerFast.from_pretrained(folder)
    encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=4,
            d_ff=16,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
        )
    )
    return tokenizer, encoder


def _tiny_vae(latent_channels: int = 4, **config):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8,),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=4,
        sample_size=8,
        **config,
    )


def save_tiny_sdxl(folder: Path) -> Path:
    """A StableDiffusionXLPipeline: UNet with text_time added conditions, two CLIP encoders (the second with
    projection)."""
    import tempfile

    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(Path(tempfile.mkdtemp()))
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=8 + 6 * 4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    StableDiffusionXLPipeline(
        vae=_tiny_vae(),
        text_encoder=_tiny_clip_text(tokenizer),
        text_encoder_2=_tiny_clip_text(tokenizer, projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    ).save_pretrained(folder)
    return folder


def save_tiny_dit(folder: Path, num_classes: int = 10) -> Path:
    """A DiTPipeline: class-conditional DiT with learned variance (8 output channels for 4 latent ones), DDIM, VAE."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=num_classes,
    )
    scheduler = DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False)
    DiTPipeline(transformer=transformer, vae=_tiny_vae(), scheduler=scheduler).save_pretrained(folder)
    return folder


def save_tiny_sd3(folder: Path) -> Path:
    """A StableDiffusion3Pipeline: SD3 transformer, two CLIP encoders with projection, T5, shifted flow-matching
    scheduler."""
    import tempfile

    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(Path(tempfile.mkdtemp()))
    t5_tokenizer, t5 = tiny_t5(Path(tempfile.mkdtemp()), d_model=32)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        pos_embed_max_size=8,
    )
    StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_vae(scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=_tiny_clip_text(tokenizer, projection=True),
        tokenizer=tokenizer,
        text_encoder_2=_tiny_clip_text(tokenizer, projection=True),
        tokenizer_2=tokenizer,
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer,
    ).save_pretrained(folder)
    return folder


def save_tiny_flux(folder: Path) -> Path:
    """A FluxPipeline (FLUX.1-dev layout): transformer with a guidance embedding, CLIP (pooled) and T5, dynamic
    shift."""
    import tempfile

    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(Path(tempfile.mkdtemp()))
    t5_tokenizer, t5 = tiny_t5(Path(tempfile.mkdtemp()), d_model=32)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=8,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_tiny_vae(scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_tiny_clip_text(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
    ).save_pretrained(folder)
    return folder


def tiny_umt5(folder: Path, d_model: int = 16):
    """A UMT5 encoder (Wan's text encoder class) with the single-letter T5 tokenizer of `tiny_t5`."""
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer, _ = tiny_t5(folder, d_model)
    config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=4,
        d_ff=16,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
    )
    return tokenizer, UMT5EncoderModel(config)


def save_tiny_wan(folder: Path) -> Path:
    """A WanPipeline (Wan 2.1 T2V layout): WanTransformer3DModel, AutoencoderKLWan (4x temporal, 8x spatial), UMT5,
    UniPC with flow sigmas and flow_shift 3."""
    import tempfile

    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    tokenizer, text_encoder = tiny_umt5(Path(tempfile.mkdtemp()), d_model=16)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=16,
        num_layers=1,
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(
        base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, latents_mean=[0.1] * 4, latents_std=[2.0] * 4
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler
    ).save_pretrained(folder)
    return folder


def save_tiny_cogvideox(folder: Path) -> Path:
    """A CogVideoXPipeline (5B layout: rotary positions): CogVideoXTransformer3DModel, AutoencoderKLCogVideoX (4x
    temporal, 8x spatial), T5, CogVideoX's DDIM with v-prediction and SNR shift 3."""
    import tempfile

    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    torch.manual_seed(0)
    tokenizer, text_encoder = tiny_t5(Path(tempfile.mkdtemp()), d_model=16)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,  # rotary: a quarter for time, 3/8 for each side, all even
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=16,
        num_layers=1,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        use_rotary_positional_embeddings=True,
    )
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_height=32,
        sample_width=32,
    )
    scheduler = CogVideoXDDIMScheduler(prediction_type="v_prediction", snr_shift_scale=3.0, timestep_spacing="trailing")
    CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler
    ).save_pretrained(folder)
    return folder


def save_tiny_ltx(folder: Path) -> Path:
    """An LTXPipeline: LTXVideoTransformer3DModel, AutoencoderKLLTXVideo (4x temporal, 16x spatial), T5,
    FlowMatchEulerDiscreteScheduler with LTX-Video's dynamic shift."""
    import tempfile

    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    tokenizer, text_encoder = tiny_t5(Path(tempfile.mkdtemp()), d_model=16)
    transformer = LTXVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        cross_attention_dim=24,
        num_layers=1,
        caption_channels=16,
    )
    scaling = (True, True, False, False)
    vae = AutoencoderKLLTXVideo(
        latent_channels=4,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=scaling,
        decoder_spatio_temporal_scaling=scaling,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096
    )
    LTXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler
    ).save_pretrained(folder)
    return folder
