"""Load a Stable Diffusion 1.x base model the way users hold it, offline where it is local.

A reference is a local diffusers folder, a single LDM-layout checkpoint (`.safetensors`, `.ckpt`,
`.pt`: what Kohya/A1111 users download), or a Hugging Face hub id. Single files need component
configs, which diffusers would otherwise fetch from the hub: the SD 1.5 configs and CLIP tokenizer are
bundled (`sd15/`), so `v1-5-pruned.safetensors` alone loads with no network.

Pickled checkpoints are untrusted: they are only ever read with `torch.load(weights_only=True)`
(here, and diffusers 0.42 does the same in its single-file path), so a file holding code is refused.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_assets.models.references import CHECKPOINT_SUFFIXES, PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES

PIPELINE_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_IDENTITY_SUFFIXES = frozenset((*CHECKPOINT_SUFFIXES, ".json", ".txt", ".model"))
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass
class BaseModelParts:
    """The parts of a base model that LoRA training needs."""

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any  # DDPMScheduler from the model's scheduler config: the training noise
    identity: str  # names exactly these weights, for cache keys (see `model_identity`)


def bundled_sd15_config() -> Path:
    """The bundled diffusers config folder for SD 1.5 (configs and CLIP tokenizer, no weights)."""
    return Path(__file__).resolve().parent / "sd15"


def load_base_model(
    reference: str, vae: str | None = None, config: str | None = None, revision: str = "main"
) -> BaseModelParts:
    """Load `reference` (diffusers folder, single checkpoint file or hub id), optionally with another VAE.

    `config` is the diffusers config folder for a single-file checkpoint (default: bundled SD 1.5);
    `revision` applies to hub ids. Problems with local files raise ValueError naming the path.
    """
    from diffusers import DDPMScheduler

    local = _local_path(reference, "base model")
    if local is None:
        parts = _load_pretrained(reference, local_files_only=False, revision=revision)
        config_source = reference
    elif local.is_dir():
        _require_pipeline_folder(local)
        parts = _load_pretrained(str(local), local_files_only=True)
        config_source = str(local)
    else:
        config_folder = _config_folder(config)
        parts = _load_single_file(local, config_folder)
        config_source = str(config_folder)
    tokenizer, text_encoder, base_vae, unet, scheduler_config = parts
    if vae is not None:
        base_vae = _load_vae(vae, config_source, revision if local is None else None)
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    return BaseModelParts(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=base_vae,
        unet=unet,
        noise_scheduler=noise_scheduler,
        identity=model_identity(reference, vae, config, revision),
    )


def model_identity(
    reference: str, vae: str | None = None, config: str | None = None, revision: str = "main"
) -> str:
    """A stable string naming the weights `load_base_model` would load, without loading them.

    Local files and folders: a digest of (relative path, size, mtime_ns) of their weight and config
    files, so moving a folder keeps it and replacing a file changes it. Hub ids: id@revision, with the
    revision resolved to a commit once the files are in the local cache.
    """
    local = _local_path(reference, "base model")
    if local is None:
        identity = _hub_identity(reference, revision)
    elif local.is_dir():
        identity = _files_identity(local.name, local, _pipeline_files(local))
    else:
        identity = _files_identity(local.name, local.parent, [local])
        config_folder = _config_folder(config)
        if config_folder != bundled_sd15_config():
            config_files = _pipeline_files(config_folder)
            identity += f" config {_files_identity(config_folder.name, config_folder, config_files)}"
    if vae is not None:
        vae_local = _local_path(vae, "VAE")
        if vae_local is None:
            identity += f" vae {_hub_identity(vae, 'main')}"
        elif vae_local.is_dir():
            identity += f" vae {_files_identity(vae_local.name, vae_local, _vae_folder_files(vae_local))}"
        else:
            identity += f" vae {_files_identity(vae_local.name, vae_local.parent, [vae_local])}"
    return identity


def _local_path(reference: str, what: str) -> Path | None:
    """The local file or folder `reference` names, or None for a hub id; a missing local path raises.

    "owner/name" is a hub id unless `owner` is an existing local folder: then it is a mistyped path, and
    failing at once beats minutes of hub retries.
    """
    path = Path(reference).expanduser()
    if path.exists():
        return path
    looks_like_hub_id = (
        _HUB_ID.fullmatch(reference) is not None
        and not reference.endswith(CHECKPOINT_SUFFIXES)
        and not (path.parent != Path() and path.parent.is_dir())
    )
    if looks_like_hub_id:
        return None
    shown = str(path) if path.is_absolute() else f"{path} in {Path.cwd()}"
    raise ValueError(f"{what} {reference!r}: no such file or folder ({shown})")


def _config_folder(config: str | None) -> Path:
    if config is None:
        return bundled_sd15_config()
    folder = Path(config).expanduser()
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"config {config!r}: not a diffusers pipeline folder (no model_index.json in {folder.absolute()})"
        )
    return folder


def _require_pipeline_folder(folder: Path) -> None:
    missing = [name for name in ("model_index.json", *PIPELINE_COMPONENTS) if not (folder / name).exists()]
    if missing:
        raise ValueError(
            f"base model {str(folder)!r}: not a diffusers SD pipeline folder (missing {missing})"
        )


def _load_pretrained(source: str, local_files_only: bool, revision: str | None = None) -> tuple[Any, ...]:
    """Components of a diffusers-format model, from a local folder or the hub."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    options: dict[str, Any] = {"local_files_only": local_files_only}
    if revision is not None:
        options["revision"] = revision
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **options)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **options)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **options)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **options)
        scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", **options)
    except Exception as exc:
        where = "folder" if local_files_only else "hub id"
        raise ValueError(f"base model {source!r} ({where}): cannot load it: {_first_line(exc)}") from exc
    return tokenizer, text_encoder.eval(), vae.eval(), unet.eval(), scheduler_config


def _load_single_file(path: Path, config_folder: Path) -> tuple[Any, ...]:
    """Components of one LDM-layout checkpoint, configured from `config_folder` (no network)."""
    from diffusers import StableDiffusionPipeline

    _check_readable(path)
    try:
        pipeline = StableDiffusionPipeline.from_single_file(
            str(path),
            config=str(config_folder),
            local_files_only=True,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    except Exception as exc:
        raise ValueError(
            f"base model {str(path)!r}: not an SD 1.x checkpoint readable with config "
            f"{str(config_folder)!r}: {_first_line(exc)}"
        ) from exc
    for name in ("unet", "vae", "text_encoder"):
        _check_complete(getattr(pipeline, name), name, path)
    return (
        pipeline.tokenizer,
        pipeline.text_encoder,
        pipeline.vae,
        pipeline.unet,
        pipeline.scheduler.config,
    )


def _load_vae(reference: str, config_source: str, revision: str | None) -> Any:
    """A VAE override: a diffusers VAE (or pipeline) folder, a hub id, or a single checkpoint file."""
    from diffusers import AutoencoderKL

    local = _local_path(reference, "VAE")
    if local is None or local.is_dir():
        if local is not None and not (local / "config.json").is_file() and not (local / "vae").is_dir():
            raise ValueError(f"VAE {reference!r}: a folder needs config.json or a vae/ subfolder")
        source = str(local) if local is not None else reference
        subfolder = "vae" if local is not None and not (local / "config.json").is_file() else None
        try:
            vae = AutoencoderKL.from_pretrained(
                source, subfolder=subfolder, local_files_only=local is not None
            )
        except Exception as exc:
            raise ValueError(f"VAE {reference!r}: cannot load it: {_first_line(exc)}") from exc
        return vae.eval()
    state = _read_checkpoint(local)
    options: dict[str, Any] = {"config": config_source, "subfolder": "vae"}
    if revision is None:
        options["local_files_only"] = True
    else:
        options["config_revision"] = revision
    try:
        vae = AutoencoderKL.from_single_file(state, **options)
    except Exception as exc:
        raise ValueError(f"VAE {str(local)!r}: not an SD VAE checkpoint: {_first_line(exc)}") from exc
    _check_complete(vae, "vae", local)
    return vae


def _check_readable(path: Path) -> None:
    """Open a checkpoint before diffusers does, for a clear error (and our own weights_only check)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        _read_checkpoint(path)
        return
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise ValueError(
            f"checkpoint {str(path)!r}: unknown file type (expected one of {CHECKPOINT_SUFFIXES})"
        )
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:
        raise ValueError(f"checkpoint {str(path)!r}: unreadable safetensors file: {exc}") from exc
    if not keys:
        raise ValueError(f"checkpoint {str(path)!r}: holds no tensors")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state dict; pickles only through `torch.load(weights_only=True)`."""
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"checkpoint {str(path)!r}: unreadable safetensors file: {exc}") from exc
    elif suffix in PICKLE_SUFFIXES:
        state = _load_pickle(path)
    else:
        raise ValueError(
            f"checkpoint {str(path)!r}: unknown file type (expected one of {CHECKPOINT_SUFFIXES})"
        )
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    import torch

    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {str(path)!r}: holds no state dict of tensors")
    return state


def _load_pickle(path: Path) -> Any:
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if "global" in reason.lower():
            raise ValueError(
                f"checkpoint {str(path)!r}: refused: it holds pickled objects other than tensors, which "
                f"could run code when loaded ({reason}); only plain weights are accepted (convert it to "
                ".safetensors)"
            ) from exc
        raise ValueError(f"checkpoint {str(path)!r}: unreadable pickle: {reason}") from exc
    except Exception as exc:  # a damaged pickle fails in arbitrary ways (KeyError, EOFError, ...)
        raise ValueError(f"checkpoint {str(path)!r}: unreadable: {type(exc).__name__}: {exc}") from exc


def _unpickler_reason(exc: Exception) -> str:
    """The one useful line of torch's long weights_only error (e.g. "Unsupported global: GLOBAL x.Y ...")."""
    text = str(exc)
    _, found, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if found else text).splitlines() if line.strip()]
    return lines[0].split(". Please use")[0] if lines else type(exc).__name__


def _first_line(exc: Exception) -> str:
    """diffusers' errors carry pages of advice about its own API; the first line is the problem."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "meta tensor" in line:  # what diffusers says when a checkpoint lacks some UNet/VAE weights
        return f"weights are missing from the checkpoint ({line})"
    return line


def _check_complete(model: Any, name: str, path: Path) -> None:
    """diffusers leaves weights a checkpoint lacks on the meta device instead of failing: fail here."""
    missing = [key for key, tensor in model.state_dict().items() if tensor.is_meta]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r}: {name} weights missing, e.g. {missing[:3]}")


def _pipeline_files(folder: Path) -> list[Path]:
    files = [folder / "model_index.json"]
    for component in PIPELINE_COMPONENTS:
        files += sorted((folder / component).rglob("*"))
    return files


def _vae_folder_files(folder: Path) -> list[Path]:
    root = folder if (folder / "config.json").is_file() else folder / "vae"
    return sorted(root.rglob("*"))


def _files_identity(name: str, root: Path, files: list[Path]) -> str:
    """`name#digest` over (relative path, size, mtime_ns) of the weight and config files among `files`."""
    digest = hashlib.sha256()
    for path in files:
        relative = path.relative_to(root)
        if (
            path.is_file()
            and path.suffix in _IDENTITY_SUFFIXES
            and not any(p.startswith(".") for p in relative.parts)
        ):
            stat = path.stat()
            digest.update(f"{relative.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{name}#{digest.hexdigest()[:16]}"


def _hub_identity(repo_id: str, revision: str) -> str:
    """repo@revision; a branch or tag becomes its commit when the model is in the local hub cache."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return f"{repo_id}@{revision}"
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model_index.json", "config.json"):
        cached = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(cached, str):
            return f"{repo_id}@{Path(cached).parent.name}"
    return f"{repo_id}@{revision}"
