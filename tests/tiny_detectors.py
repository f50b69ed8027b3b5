"""Tiny random-weight open-vocabulary detectors saved to disk, for tests that load the `grounding-dino`,
`owlv2` and `grounding-dino-py` backends by path.

Each builder is deterministic (fixed seed), writes nothing but the target folder and needs no network; the
transformers ones take well under a second once transformers is imported. The models detect nothing
meaningful, but they run the backends' real tokenisation, pre- and post-processing and inference code.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["a", "photo", "of", "cat", "dog", "bicycle", "person", "car", "red", "ball", "tree", "traffic", "light",
         "teddy", "bear", "chair", "cup", "table", "dining"]
BERT_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
"""Where bert-base-uncased keeps the tokens that GroundingDINO treats specially (its phrase delimiters)."""


def _folder(directory: str | Path) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_bert_vocab(directory: str | Path) -> Path:
    """A WordPiece `vocab.txt` with bert-base-uncased's special-token ids, then WORDS (ids from 1030 on)."""
    by_id = {i: token for token, i in BERT_IDS.items()}
    tokens = [by_id.get(i, f"[unused{i}]") for i in range(max(BERT_IDS.values()) + 1)] + WORDS
    path = _folder(directory) / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary (CLIP's layout: bytes, bytes + '</w>', merges, specials) that spells WORDS
    as single tokens through left-to-right merges."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        piece = word[0]
        for i, char in enumerate(word[1:], start=1):
            right = char + "</w>" if i == len(word) - 1 else char
            pair = (piece, right)
            piece += right
            if pair not in merges:
                merges.append(pair)
                tokens.append(piece)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


def build_tiny_grounding_dino(directory: str | Path) -> Path:
    """A transformers `GroundingDinoForObjectDetection` + `GroundingDinoProcessor` folder: Swin backbone, 1-layer
    BERT, 64-token prompts, images resized to 64 px on the short side."""
    from transformers import (BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor)

    torch.manual_seed(0)
    path = _folder(directory)
    vocab = write_bert_vocab(path)
    tokenizer = BertTokenizer(str(vocab), model_max_length=64)
    config = GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                             window_size=2, image_size=64, out_features=["stage2", "stage3", "stage4"]),
        text_config=dict(model_type="bert", vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=2, decoder_n_points=2,
        num_queries=10, max_text_len=64,
    )
    GroundingDinoForObjectDetection(config).save_pretrained(path)
    images = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    GroundingDinoProcessor(images, tokenizer).save_pretrained(path)
    return path


def build_tiny_owlv2(directory: str | Path) -> Path:
    """A transformers `Owlv2ForObjectDetection` + `Owlv2Processor` folder: 1-layer ViT at 32 px (8 px patches, so
    16 boxes) and a 1-layer CLIP text encoder with 16-token queries."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    torch.manual_seed(0)
    path = _folder(directory)
    vocab, merges = _clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    Owlv2ForObjectDetection(config).save_pretrained(path)
    Owlv2Processor(Owlv2ImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(path)
    return path


def build_tiny_groundingdino_py(directory: str | Path) -> dict[str, str]:
    """Options (`config_file`, `checkpoint`, `text_encoder`) of the `grounding-dino-py` backend for a GroundingDINO
    built by groundingdino-py itself from its SwinT-OGC config, with a shrunk transformer (1 encoder and 2 decoder
    layers, 10 queries) and a tiny BERT folder. Needs groundingdino-py (so transformers 4.x). The width stays 256,
    which the package hard-codes in places, and the Swin-T backbone keeps its real size (28M parameters), as the
    package builds only the released backbones: this one takes seconds, not milliseconds."""
    import groundingdino
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    path = _folder(directory)
    bert = _folder(path / "bert")
    tokenizer = BertTokenizer(str(write_bert_vocab(bert)), model_max_length=256)
    tokenizer.save_pretrained(bert)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(bert)
    released = Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py"
    config = path / "GroundingDINO_tiny.py"
    config.write_text(released.read_text(encoding="utf-8") + "\n".join([
        "", "enc_layers = 1", "dec_layers = 2", "dim_feedforward = 32",
        "num_queries = 10", "enc_n_points = 2", "dec_n_points = 2",
        f"text_encoder_type = {str(bert)!r}", ""]), encoding="utf-8")
    args = SLConfig.fromfile(str(config))
    args.device = "cpu"
    checkpoint = path / "groundingdino_tiny.pth"
    torch.save({"model": build_model(args).state_dict()}, checkpoint)
    return {"config_file": str(config), "checkpoint": str(checkpoint), "text_encoder": str(bert)}
