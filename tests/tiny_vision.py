"""Tiny random-weight vision models saved to disk, for tests that load foundation backends by path.

Each builder is deterministic (fixed seed), writes nothing but the target folder, needs no network and (once
transformers is imported) takes well under a second; the models are useless as models but exercise the real
loading, pre- and post-processing and inference code of the backends.
"""

from __future__ import annotations

from pathlib import Path

import torch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
WORDS = ["a", "an", "the", "of", "photo", "picture", "dog", "cat", "red", "blue", "green", "small", "big", "on",
         "in", "with", "and", "ball", "bike", "tree", "grass", "sky", "man", "woman", "car", "sitting", "standing"]

TINY_SAM_ARCHITECTURE = {
    "encoder_embed_dim": 16,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "image_size": 64,
    "window_size": 2,
    "prompt_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "decoder_mlp_dim": 32,
    "iou_head_hidden_dim": 16,
    "mask_in_chans": 4,
}
"""A ~50k-parameter SAM in the `architecture` option format of the `sam` segmenter backend."""


def _folder(directory: str | Path) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_tiny_sam_checkpoint(directory: str | Path) -> tuple[Path, dict]:
    """A segment-anything state dict (`sam_tiny.pth`) and the `architecture` option that builds its model."""
    from cielr_agent.tools.foundation.segmentation import build_sam

    torch.manual_seed(0)
    path = _folder(directory) / "sam_tiny.pth"
    torch.save(build_sam(dict(TINY_SAM_ARCHITECTURE)).state_dict(), path)
    return path, dict(TINY_SAM_ARCHITECTURE)


def build_tiny_sam_hf(directory: str | Path) -> Path:
    """A transformers `SamModel` + `SamProcessor` folder working at 64 px."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    hidden = 16
    config = SamConfig(
        vision_config=dict(hidden_size=16, output_channels=hidden, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16, window_size=2, global_attn_indexes=[1],
                           num_pos_feats=hidden // 2, mlp_dim=32),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16),
    )
    path = _folder(directory)
    SamModel(config).save_pretrained(path)
    SamProcessor(SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                   mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
                 ).save_pretrained(path)
    return path


def build_tiny_sam2(directory: str | Path) -> Path:
    """A transformers `Sam2Model` + `Sam2Processor` folder (Hiera backbone) working at 64 px."""
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    torch.manual_seed(0)
    hidden = 16
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[64, 64],
                    window_positional_embedding_background_size=[2, 2], blocks_per_stage=[1, 1, 2, 1],
                    embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
                    window_size_per_stage=[4, 4, 2, 2], global_attention_blocks=[3])
    config = Sam2Config(
        vision_config=dict(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                           backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=hidden),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16),
    )
    path = _folder(directory)
    Sam2Model(config).save_pretrained(path)
    Sam2Processor(Sam2ImageProcessor(size={"height": 64, "width": 64}, mask_size={"height": 16, "width": 16})
                  ).save_pretrained(path)
    return path


def build_tiny_depth_anything(directory: str | Path) -> Path:
    """A transformers Depth Anything (DINOv2 backbone + DPT head) folder working at 56 px."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    backbone = dict(model_type="dinov2", hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=32, image_size=56, patch_size=14, out_indices=[1, 2, 3, 4],
                    reshape_hidden_states=False, initializer_range=0.2)
    # a wider initialisation than the default 0.02, which makes the tiny head's output (numerically) constant
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=16,
                                 neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8, head_hidden_size=8,
                                 initializer_range=0.2)
    path = _folder(directory)
    DepthAnythingForDepthEstimation(config).save_pretrained(path)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      resample=3, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(path)
    return path


def _write_wordpiece_vocab(path: Path, extra: list[str]) -> list[str]:
    """A WordPiece `vocab.txt` of BERT's special tokens, `extra` tokens and a few caption words."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *extra, *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return vocab


def build_tiny_blip(directory: str | Path) -> Path:
    """A transformers BLIP captioner (`BlipForConditionalGeneration` + `BlipProcessor`) working at 32 px."""
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    torch.manual_seed(0)
    path = _folder(directory)
    vocab = _write_wordpiece_vocab(path, ["[DEC]"])
    tokenizer = BertTokenizer(str(path / "vocab.txt"), bos_token="[DEC]")
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, encoder_hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=vocab.index("[DEC]"), eos_token_id=vocab.index("[SEP]"),
                         sep_token_id=vocab.index("[SEP]"), pad_token_id=vocab.index("[PAD]")),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16, image_text_hidden_size=16,
    )
    BlipForConditionalGeneration(config).save_pretrained(path)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(path)
    return path


def build_tiny_florence2(directory: str | Path) -> Path:
    """A transformers Florence-2 captioner (DaViT + BART, `Florence2Processor`) working at 64 px.

    The byte-level BPE tokenizer has no merges, so it spells text out byte by byte.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor)

    torch.manual_seed(0)
    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>",
                                                 *sorted(ByteLevel.alphabet())])}
    tokenizer = BartTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    # DaViT downsamples by 32: a 64 px image gives 2×2 patch tokens plus one pooled token
    images = CLIPImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False, image_seq_length=5)
    config = Florence2Config(
        text_config=dict(model_type="bart", vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                         decoder_ffn_dim=32, max_position_embeddings=128, bos_token_id=0, pad_token_id=1,
                         eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2),
        vision_config=dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 16], num_heads=[1, 2, 2, 2],
                           num_groups=[1, 2, 2, 2], window_size=1, projection_dim=16, max_position_embeddings=8),
        image_token_id=tokenizer.image_token_id,
    )
    path = _folder(directory)
    Florence2ForConditionalGeneration(config).save_pretrained(path)
    Florence2Processor(image_processor=images, tokenizer=tokenizer, post_processor_config={"pure_text": {}}
                       ).save_pretrained(path)
    return path
