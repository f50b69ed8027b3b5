"""A tiny random-weight Stable Diffusion inpainting pipeline saved to disk, for tests of the diffusers backend.

`build_tiny_sd_inpaint` is deterministic (fixed seed), needs no network, writes nothing but the target folder
and takes well under a second; the pipeline paints noise, but it runs the real diffusers loading, encoding,
denoising and decoding code at 64 px.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]
MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "f</w>")]
"""A few byte-pair merges, so that the tokenizer's BPE path is exercised; everything else splits into characters."""


def _clip_tokenizer(max_length: int):
    """A CLIP BPE tokenizer over printable ASCII characters (each also as a word end, `c</w>`) and `MERGES`."""
    from transformers import CLIPTokenizer

    characters = [c for c in string.printable if c.isprintable() and not c.isspace()]
    tokens = [*SPECIAL_TOKENS, *characters, *(c + "</w>" for c in characters), *(a + b for a, b in MERGES)]
    with tempfile.TemporaryDirectory() as folder:
        vocab_file, merges_file = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab_file.write_text(json.dumps({token: i for i, token in enumerate(tokens)}), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n", encoding="utf-8")
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=max_length)


def build_tiny_sd_inpaint(directory: str | Path) -> Path:
    """A `StableDiffusionInpaintPipeline` folder (`save_pretrained`) whose default resolution is 64 px.

    UNet with 9 input channels (4 latent + 4 masked-image latent + 1 mask) and sample size 32, a 2-block VAE
    (scale factor 2), a 2-layer CLIP text encoder of width 32, a character-level CLIP tokenizer and a DDIM
    scheduler; no safety checker.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    max_length = 77
    tokenizer = _clip_tokenizer(max_length)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=16,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=16, sample_size=64,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=max_length, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(path)
    return path
