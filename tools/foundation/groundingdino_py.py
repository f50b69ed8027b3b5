"""GroundingDINO through the original IDEA-Research code (the `groundingdino-py` package, import `groundingdino`).

groundingdino-py 0.4.0 runs in pure PyTorch but only with transformers 4.x: its BERT wrapper calls
`BertModel.get_extended_attention_mask`, which transformers 5 removed. It therefore lives in its own virtual
environment (see `INSTALL`). The package builds its text encoder from the config's `text_encoder_type` at
construction; this backend hands it a local folder (the `text_encoder` option, else the config's encoder,
bert-base-uncased, from the local hub cache) so that nothing is fetched unless `allow_download` is set.

Options (`[backend_options.grounding-dino-py]`): `checkpoint` (e.g. groundingdino_swint_ogc.pth), `config_file`
(default: the package's GroundingDINO_SwinT_OGC.py), `text_encoder` (a local bert-base-uncased folder),
`box_threshold` (a floor under the caller's `min_score`, 0 by default), `text_threshold` (0.25), and the
`vocabulary` and `labels_per_prompt` of every open-vocabulary detector. The package's modules are not
dtype-aware, so this backend always runs in float32 on the configured device.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cielr_agent.errors import MissingDependencyError, MissingWeightsError

from ..backends import BackendContext
from .detection import OpenVocabularyDetector, phrase_label, prompt_chunks
from .loading import checkpoint_path, device_and_dtype

INSTALL = ("in a separate virtual environment: pip install groundingdino-py==0.4.0 transformers==4.57.6 "
           "diffusers==0.39.0 torch==2.14.1 torchvision==0.29.1, then pip install -e <this repository> (its core "
           "dependencies leave transformers alone); or use the transformers `grounding-dino` backend, which runs "
           "the same models here")
CHECKPOINT_URL = ("https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/"
                  "groundingdino_swint_ogc.pth")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MISSING_WARN, MISSING_FAIL = 0.01, 0.5
"""Shares of the model's tensors missing from a checkpoint above which loading warns, and fails."""


class GroundingDinoPyUnavailable(MissingDependencyError):
    """groundingdino-py is not installed, or cannot run with the installed transformers."""


def require_groundingdino(name: str = "grounding-dino-py") -> None:
    """Raise `GroundingDinoPyUnavailable`, saying what to install, unless groundingdino-py can run here."""
    try:
        import groundingdino.models  # noqa: F401  (the model code and everything it imports)
        import transformers
    except ImportError as exc:
        raise GroundingDinoPyUnavailable(
            f"{name}: the groundingdino-py package cannot be imported ({exc}). To fix: install it {INSTALL}") from exc
    if int(transformers.__version__.split(".")[0]) >= 5:
        raise GroundingDinoPyUnavailable(
            f"{name}: groundingdino-py 0.4.0 does not work with transformers {transformers.__version__} (it calls "
            f"BertModel.get_extended_attention_mask, which transformers 5 removed). To fix: run it {INSTALL}")


class GroundingDinoPyDetector(OpenVocabularyDetector):
    """GroundingDINO from an original checkpoint (option `checkpoint`), built by groundingdino-py from its
    python config (option `config_file`); the labels become one caption "cat. dog.", each predicted phrase is
    mapped back to one of them."""

    def __init__(self, ctx: BackendContext):
        super().__init__(ctx)
        self.box_threshold = float(ctx.option("box_threshold", 0.0))
        self.text_threshold = float(ctx.option("text_threshold", 0.25))

    def _checkpoint(self) -> Path:
        return checkpoint_path(self.ctx, "GroundingDINO", CHECKPOINT_URL, "groundingdino_swint_ogc.pth")

    def _config_file(self) -> Path:
        import groundingdino

        option = self.ctx.option("config_file")
        path = (Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py" if option is None
                else Path(str(option)).expanduser())
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.ctx.name}: the GroundingDINO config {path} does not exist. To fix: set "
                f"[backend_options.{self.ctx.name}] config_file to the python config of the checkpoint "
                "(GroundingDINO_SwinT_OGC.py or GroundingDINO_SwinB_cfg.py in the package's config folder)")
        return path

    def _text_encoder(self, default: str) -> str:
        """The `text_encoder` folder; else the config's `text_encoder_type`: a folder as it is, a hub id from the
        local hub cache (or fetched by the package itself with `allow_download`)."""
        option = self.ctx.option("text_encoder")
        fix = (f"To fix: set [backend_options.{self.ctx.name}] text_encoder to a local {default} folder (config.json, "
               f"vocab.txt and weights, e.g. from `hf download {default} --local-dir /path/to/{default}`)")
        if option is not None:
            path = Path(str(option)).expanduser()
            if not (path / "config.json").is_file():
                raise MissingWeightsError(f"{self.ctx.name}: the text encoder folder {path} has no config.json. {fix}")
            return str(path)
        if Path(default).is_dir() or self.ctx.allow_download:
            return default
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return snapshot_download(default, local_files_only=True)
        except LocalEntryNotFoundError as exc:
            raise MissingWeightsError(f"{self.ctx.name}: the text encoder {default} is not in the local hub cache. "
                                      f"{fix}; or set allow_download = true") from exc

    def _state_dict(self, checkpoint: Path) -> dict[str, Any]:
        """The checkpoint's tensors, from a plain state dict or the original {"model": state dict} file."""
        import torch

        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            raise MissingWeightsError(
                f"{self.ctx.name}: {checkpoint} is not a loadable GroundingDINO checkpoint "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). To fix: use an original "
                f"groundingdino_*.pth (e.g. {CHECKPOINT_URL})") from exc
        state = state.get("model", state)
        return {k.removeprefix("module."): v for k, v in state.items()}

    def _build(self, checkpoint: Path, config_file: Path, device: str) -> Any:
        """groundingdino-py's model for `config_file` with the checkpoint's weights, on `device`, in eval mode."""
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig

        state = self._state_dict(checkpoint)
        args = SLConfig.fromfile(str(config_file))
        args.device = device
        args.text_encoder_type = self._text_encoder(args.text_encoder_type)
        model = build_model(args)
        mismatch = (f"it does not fit {config_file.name}. To fix: set [backend_options.{self.ctx.name}] config_file "
                    "to the config the checkpoint was trained with")
        try:
            missing = model.load_state_dict(state, strict=False).missing_keys
        except RuntimeError as exc:  # tensors of other shapes
            raise MissingWeightsError(f"{self.ctx.name}: {checkpoint}: {str(exc).splitlines()[0][:200]}; {mismatch}"
                                      ) from exc
        total = len(model.state_dict())
        if len(missing) > MISSING_FAIL * total:
            raise MissingWeightsError(f"{self.ctx.name}: {checkpoint} lacks {len(missing)} of the model's {total} "
                                      f"tensors (e.g. {', '.join(missing[:3])}): {mismatch}")
        if len(missing) > MISSING_WARN * total:
            warnings.warn(f"{self.ctx.name}: {len(missing)} of {total} tensors are not in {checkpoint} and keep "
                          f"random values (e.g. {', '.join(missing[:3])})", stacklevel=2)
        return model.to(device).eval()

    def _load(self) -> tuple[Any, Any]:
        require_groundingdino(self.ctx.name)
        checkpoint, config_file = self._checkpoint(), self._config_file()
        device, _ = device_and_dtype(self.ctx)
        key = f"{self.ctx.name}:model:{checkpoint}:{config_file}:{self.ctx.option('text_encoder')}:{device}"
        return self.ctx.models.get(key, lambda: self._build(checkpoint, config_file, device)), None

    def _chunks(self, labels: list[str], model: Any, processor: Any) -> list[list[str]]:
        tokenizer = model.tokenizer
        return prompt_chunks(labels, self.labels_per_prompt, budget=model.max_text_len - 2,  # [CLS] ... [SEP]
                             tokens=lambda label: len(tokenizer.tokenize(f"{label}.")))

    def _detect_chunk(self, model: Any, processor: Any, image: np.ndarray, labels: list[str],
                      min_score: float) -> list[tuple[str, float, list[float]]]:
        import groundingdino.datasets.transforms as T
        import torch
        from groundingdino.util.utils import get_phrases_from_posmap
        from PIL import Image
        from torchvision.ops import box_convert

        caption = " ".join(f"{label}." for label in labels)
        transform = T.Compose([T.RandomResize([800], max_size=1333), T.ToTensor(),
                               T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        pixels, _ = transform(Image.fromarray(image), None)
        device, _ = device_and_dtype(self.ctx)
        with torch.inference_mode():
            outputs = model(pixels[None].to(device), captions=[caption])
        probs = outputs["pred_logits"][0].float().sigmoid().cpu()
        scores = probs.max(dim=1).values
        keep = scores > max(min_score, self.box_threshold)
        height, width = image.shape[:2]
        boxes = box_convert(outputs["pred_boxes"][0].float().cpu()[keep] * torch.tensor([width, height] * 2),
                            "cxcywh", "xyxy")
        tokenized = model.tokenizer(caption)
        found = []
        for prob, score, box in zip(probs[keep], scores[keep].tolist(), boxes.tolist()):
            phrase = get_phrases_from_posmap(prob > self.text_threshold, tokenized, model.tokenizer)
            label = phrase_label(phrase, labels, model.tokenizer.tokenize)
            if label is not None:
                found.append((label, score, box))
        return found
