"""Base models load the way users hold them (diffusers folder, one LDM checkpoint file, a separate VAE),
offline, bit-identically, and untrusted pickles are refused rather than executed."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from lora_assets.training.base_model import bundled_sd15_config, load_base_model, model_identity

SD15_IDS = [49406, 320, 1125, 539, 320, 786, 49407]  # "a photo of a man" with SD 1.5's real tokenizer


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from lora_assets.models.tiny import build_tiny_sd

    torch.set_num_threads(1)
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def saved(tiny_sd: Path) -> dict[str, dict[str, Any]]:
    """The weights exactly as `save_pretrained` wrote them, read without any model code."""
    from safetensors.torch import load_file

    return {
        "unet": load_file(tiny_sd / "unet" / "diffusion_pytorch_model.safetensors"),
        "vae": load_file(tiny_sd / "vae" / "diffusion_pytorch_model.safetensors"),
        "text_encoder": load_file(tiny_sd / "text_encoder" / "model.safetensors"),
    }


def assert_weights(model: Any, expected: dict[str, Any]) -> None:
    import torch

    state = model.state_dict()
    assert set(state) == set(expected)
    different = [key for key, value in state.items() if not torch.equal(value, expected[key])]
    assert different == []


def assert_all_weights(base: Any, saved: dict[str, dict[str, Any]]) -> None:
    for name in ("unet", "vae", "text_encoder"):
        assert_weights(getattr(base, name), saved[name])


class Payload:
    """Pickles as a call to `leave_mark`: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return leave_mark, (str(self.marker),)


def leave_mark(path: str) -> None:
    Path(path).write_text("executed", encoding="utf-8")


def test_diffusers_folder_loads_saved_weights(tiny_sd: Path, saved: dict[str, dict[str, Any]]) -> None:
    from diffusers import DDPMScheduler

    base = load_base_model(str(tiny_sd))
    assert_all_weights(base, saved)
    assert base.tokenizer("a photo of a man").input_ids == SD15_IDS
    assert isinstance(base.noise_scheduler, DDPMScheduler)
    assert base.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert base.noise_scheduler.config.num_train_timesteps == 1000


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_loads_bit_identical(
    tiny_sd: Path, saved: dict[str, dict[str, Any]], tmp_path: Path, suffix: str
) -> None:
    import torch
    from diffusers import DDPMScheduler
    from safetensors.torch import load_file

    single = tiny_sd / "tiny-sd.safetensors"
    if suffix == ".ckpt":  # the layout of the original v1-5-pruned.ckpt
        single = tmp_path / "tiny-sd.ckpt"
        torch.save({"state_dict": load_file(tiny_sd / "tiny-sd.safetensors"), "global_step": 0}, single)
    base = load_base_model(str(single), config=str(tiny_sd))
    assert_all_weights(base, saved)
    assert base.tokenizer("a photo of a man").input_ids == SD15_IDS
    assert isinstance(base.noise_scheduler, DDPMScheduler)


def test_vae_override_from_single_files(
    tiny_sd: Path, saved: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file, save_file

    from lora_assets.training.ldm_export import vae_state_dict

    single, vae_file = tiny_sd / "tiny-sd.safetensors", tiny_sd / "tiny-vae.safetensors"
    base = load_base_model(str(single), vae=str(vae_file), config=str(tiny_sd))
    assert_weights(base.vae, saved["vae"])

    pt_file = tmp_path / "vae.pt"
    torch.save(load_file(tiny_sd / "tiny-vae.safetensors"), pt_file)
    assert_weights(load_base_model(str(tiny_sd), vae=str(pt_file)).vae, saved["vae"])

    torch.manual_seed(1)  # a different VAE proves the override replaces the base's
    other = AutoencoderKL.from_config(AutoencoderKL.load_config(tiny_sd / "vae"))
    save_file(vae_state_dict(other), tmp_path / "other-vae.safetensors")
    torch.save(vae_state_dict(other), tmp_path / "other-vae.pt")
    for name in ("other-vae.safetensors", "other-vae.pt"):
        base = load_base_model(str(tiny_sd), vae=str(tmp_path / name))
        assert_weights(base.vae, other.state_dict())
        assert_weights(base.unet, saved["unet"])


def test_pickled_code_is_refused(tiny_sd: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    marker = tmp_path / "executed.txt"
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2), "payload": Payload(marker)}}, checkpoint)
    torch.load(checkpoint, weights_only=False)  # control: an unrestricted load runs the payload
    assert marker.exists()
    marker.unlink()

    pattern = re.escape(str(checkpoint)) + ".*refused"
    with pytest.raises(ValueError, match=pattern):
        load_base_model(str(checkpoint), config=str(tiny_sd))
    with pytest.raises(ValueError, match=pattern):
        load_base_model(str(tiny_sd), vae=str(checkpoint))
    # diffusers' own single-file readers refuse it too (they pass weights_only=True)
    with pytest.raises(OSError):
        StableDiffusionPipeline.from_single_file(str(checkpoint), config=str(tiny_sd), local_files_only=True)
    with pytest.raises(OSError):
        AutoencoderKL.from_single_file(str(checkpoint), config=str(tiny_sd), subfolder="vae")
    assert not marker.exists()


def test_bundled_sd15_config() -> None:
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    sd15 = bundled_sd15_config()
    tokenizer = CLIPTokenizer.from_pretrained(sd15 / "tokenizer")
    assert tokenizer("a photo of a man").input_ids == SD15_IDS
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert UNet2DConditionModel.load_config(sd15 / "unet")["block_out_channels"] == [320, 640, 1280, 1280]
    assert CLIPTextConfig.from_pretrained(sd15 / "text_encoder").hidden_size == 768
    assert StableDiffusionPipeline.load_config(sd15)["safety_checker"] == [None, None]
    scheduler = DDPMScheduler.from_pretrained(sd15, subfolder="scheduler")
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)


def test_identity_follows_the_weight_files(tiny_sd: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(tiny_sd, folder)
    single = folder / "tiny-sd.safetensors"
    first, second = load_base_model(str(folder)), load_base_model(str(folder))
    assert first.identity == second.identity == model_identity(str(folder))
    assert model_identity(str(single)) == model_identity(str(single))

    before = {
        "folder": model_identity(str(folder)),
        "single": model_identity(str(single)),
        "with_vae": model_identity(str(single), vae=str(folder / "tiny-vae.safetensors")),
    }
    assert len(set(before.values())) == 3
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert model_identity(str(folder)) != before["folder"]
    assert model_identity(str(single)) == before["single"]
    with single.open("ab") as handle:
        handle.write(b" ")
    assert model_identity(str(single)) != before["single"]
    vae_file = folder / "tiny-vae.safetensors"
    vae_file.write_bytes(vae_file.read_bytes())
    after = model_identity(str(single), vae=str(vae_file))
    assert after != before["with_vae"] and after.startswith(model_identity(str(single)))


def test_missing_or_unreadable_paths_are_clear_errors(tiny_sd: Path, tmp_path: Path) -> None:
    for missing in (tmp_path / "nowhere" / "model", tmp_path / "v1-5-pruned.safetensors"):
        with pytest.raises(ValueError, match=re.escape(str(missing)) + ".*no such file"):
            load_base_model(str(missing))
        with pytest.raises(ValueError, match=re.escape(str(missing)) + ".*no such file"):
            load_base_model(str(tiny_sd), vae=str(missing))
    for name in ("broken.safetensors", "broken.ckpt"):
        broken = tmp_path / name
        broken.write_bytes(b"not a checkpoint at all")
        with pytest.raises(ValueError, match=re.escape(str(broken)) + ".*unreadable"):
            load_base_model(str(broken), config=str(tiny_sd))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + ".*not a diffusers"):
        load_base_model(str(tmp_path))


@pytest.mark.parametrize(
    "dropped", ["model.diffusion_model.out.2.weight", "text_model.final_layer_norm.weight"]
)
def test_incomplete_checkpoint_is_refused(tiny_sd: Path, tmp_path: Path, dropped: str) -> None:
    """diffusers leaves weights a checkpoint lacks uninitialised (text encoder) or fails cryptically."""
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_sd / "tiny-sd.safetensors")
    (key,) = [k for k in state if k.endswith(dropped)]
    del state[key]
    partial = tmp_path / "partial.safetensors"
    save_file(state, partial)
    with pytest.raises(ValueError, match=re.escape(str(partial)) + ".*missing"):
        load_base_model(str(partial), config=str(tiny_sd))
