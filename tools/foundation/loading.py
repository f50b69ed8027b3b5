"""Loading foundation-model weights from a local folder or the local hub cache, once, onto the chosen device."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


from cielr_agent.errors import MissingWeightsError
from cielr_agent.imaging import image_key  # noqa: F401 - re-exported for the foundation backends

from ..backends import BackendContext
from ..model_manager import resolve_device, resolve_dtype


def model_ref(ctx: BackendContext, default: str) -> str:
    """The `model` option (a hub id or a local folder), else the backend's default hub id."""
    ref = str(ctx.option("model", default))
    return str(Path(ref).expanduser()) if ref.startswith(("~", "/", ".")) else ref


def device_and_dtype(ctx: BackendContext):
    """The resolved torch device string and dtype for this backend."""
    device = resolve_device(ctx.device)
    return device, resolve_dtype(ctx.dtype, device)


def missing_weights(ref: str, ctx: BackendContext, exc: Exception) -> MissingWeightsError:
    """An actionable error for weights that are not on this machine."""
    where = (f"the folder {ref} does not hold a loadable model" if Path(ref).exists()
             else f"'{ref}' is neither a local folder nor in the local hub cache")
    hint = ("download it on a machine with access to the hub (e.g. `hf download " + ref + "`) and copy the cache, "
            f"or point [backend_options.{ctx.name}] model = \"/path/to/folder\" at a local copy"
            if not Path(ref).exists() else "check the folder (config.json and weight files)")
    if not ctx.allow_download:
        hint += "; or set allow_download = true to let it be fetched"
    return MissingWeightsError(f"{ctx.name}: {where} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                               f"To fix: {hint}")


def checkpoint_path(ctx: BackendContext, model: str, download: str, example_file: str) -> Path:
    """The existing local file named by the `checkpoint` option; a MissingWeightsError saying where to get
    `model`'s weights (`download`) and how to point at them otherwise."""
    option = ctx.option("checkpoint")
    setting = f"[backend_options.{ctx.name}] checkpoint"
    if option is None:
        raise MissingWeightsError(f"{ctx.name}: no {model} checkpoint configured. To fix: download {download} "
                                  f"and set {setting} = \"/path/to/{example_file}\"")
    path = Path(str(option)).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"{ctx.name}: the {model} checkpoint {path} does not exist. To fix: download it "
                                  f"({download}) to that path, or point {setting} at a local copy")
    return path


def load_pretrained(ctx: BackendContext, ref: str, what: str, loader: Callable[..., Any], *,
                    to_device: bool = True, **kwargs: Any) -> Any:
    """`loader(ref, local_files_only=..., **kwargs)` once per (what, ref, device, dtype), via the model manager.

    `what` names the component (e.g. "model", "processor"); torch modules are moved to the device, cast to
    the dtype when `to_device`, and put in eval mode.
    """
    device, dtype = device_and_dtype(ctx)
    key = f"{ctx.name}:{what}:{ref}:{device}:{dtype}"

    def load() -> Any:
        try:
            obj = loader(ref, local_files_only=not ctx.allow_download, **kwargs)
        except (OSError, ValueError) as exc:
            raise missing_weights(ref, ctx, exc) from exc
        if to_device and hasattr(obj, "to"):
            obj = obj.to(device=device, dtype=dtype) if _is_module(obj) else obj.to(device)
            if hasattr(obj, "eval"):
                obj.eval()
        return obj

    return ctx.models.get(key, load)


def _is_module(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)

