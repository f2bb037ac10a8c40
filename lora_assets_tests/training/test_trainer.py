"""The training loop on the tiny model, from a real dataset zip (CPU)."""

import hashlib
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lora_assets.dataset.kohya_zip import DatasetImage, DatasetOptions, build_zip
from lora_assets.settings import DatasetSettings, TrainingSettings
from lora_assets.training.base_model import load_base_model
from lora_assets.training.config import ModelFiles, TrainConfig
from lora_assets.training.network import (
    TEXT_ENCODER_TARGETS,
    UNET_TARGETS,
    add_adapters,
    load_adapter_state_dict,
)
from lora_assets.training.trainer import train
from lora_assets.training.verify import key_problems, non_finite, read
from lora_assets_tests.conftest import sample_photo

PHOTOS = {
    "citrus.jpg": ("citrus-slices.jpg", (120, 80)),
    "bee.jpg": ("honey-bee-on-aster.jpg", (100, 80)),
    "dogs.jpg": ("dogs-at-window.jpg", (80, 120)),
    "bridge.jpg": ("suspension-bridge-night.jpg", (110, 80)),
}


def build_dataset(folder: Path, **training: object) -> Path:
    """A real dataset zip of four small photos at 64 px buckets; `training` options go into its
    dataset_config.toml (shuffle_caption, keep_tokens, flip_aug, bucket_no_upscale)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for name, (photo, size) in PHOTOS.items():
        Image.open(sample_photo(photo)).convert("RGB").resize(size).save(folder / name, quality=95)
        images.append(DatasetImage(folder / name, name, f"ohwx man, a photo of {name[:-4]}, outdoors"))
    dataset = DatasetSettings(repeats=2, resolution=64, min_bucket_reso=64, max_bucket_reso=128)
    options = DatasetOptions.from_settings(dataset, TrainingSettings.model_validate(training))
    build_zip(images, options, "ohwx", "man", folder / "set.zip")
    return folder / "set.zip"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_dataset(tmp_path_factory.mktemp("dataset"))


def config(
    tmp_path: Path,
    dataset: Path,
    base: Path,
    vae: str | None = None,
    base_config: str | None = None,
    training_key: str = "test",
    **training: object,
) -> TrainConfig:
    out = tmp_path / "out"
    values = dict(
        network_dim=4,
        network_alpha=2.0,
        epochs=1,
        batch_size=2,
        mixed_precision="no",
        sample_prompts=["ohwx man"],
        sample_steps=2,
    )
    values.update(training)
    return TrainConfig(
        dataset_zip=str(dataset),
        work_dir=str(tmp_path / "work"),
        output_file=str(out / "x.safetensors"),
        log_file=str(out / "training_log.json"),
        samples_dir=str(out / "samples"),
        diffusers_dir=str(out / "x-diffusers"),
        output_name="x",
        trigger="ohwx",
        class_token="man",
        models=ModelFiles(base_model=str(base), vae=vae, base_config=base_config),
        training=TrainingSettings.model_validate(values),
        training_key=training_key,
    )


# What sd-scripts' train_network.py (v0.10.1, 48d368fa) writes for an SD 1.x LoRA trained from a
# dataset_config.toml: every key it always writes, the dataset keys, the base-model keys.
_SD_SCRIPTS_KEYS = """
ss_session_id ss_training_started_at ss_output_name ss_learning_rate ss_text_encoder_lr ss_unet_lr
ss_num_train_images ss_num_validation_images ss_num_reg_images ss_num_batches_per_epoch ss_num_epochs
ss_gradient_checkpointing ss_gradient_accumulation_steps ss_max_train_steps ss_lr_warmup_steps
ss_lr_scheduler ss_network_module ss_network_dim ss_network_alpha ss_network_dropout ss_mixed_precision
ss_full_fp16 ss_v2 ss_base_model_version ss_clip_skip ss_max_token_length ss_cache_latents ss_seed
ss_lowram ss_noise_offset ss_multires_noise_iterations ss_multires_noise_discount
ss_adaptive_noise_scale ss_zero_terminal_snr ss_training_comment ss_sd_scripts_commit_hash
ss_optimizer ss_max_grad_norm ss_caption_dropout_rate ss_caption_dropout_every_n_epochs
ss_caption_tag_dropout_rate ss_face_crop_aug_range ss_prior_loss_weight ss_min_snr_gamma
ss_scale_weight_norms ss_ip_noise_gamma ss_debiased_estimation ss_noise_offset_random_strength
ss_ip_noise_gamma_random_strength ss_loss_type ss_huber_schedule ss_huber_scale ss_huber_c
ss_fp8_base ss_fp8_base_unet ss_validation_seed ss_validation_split ss_max_validation_steps
ss_validate_every_n_epochs ss_validate_every_n_steps ss_resize_interpolation ss_training_finished_at
ss_steps ss_epoch ss_datasets ss_tag_frequency ss_dataset_dirs ss_bucket_info ss_sd_model_name
ss_sd_model_hash ss_new_sd_model_hash sshs_model_hash sshs_legacy_hash modelspec.architecture
modelspec.implementation modelspec.title modelspec.resolution modelspec.sai_model_spec modelspec.date
modelspec.prediction_type modelspec.implementation_version
"""
SD_SCRIPTS_KEYS = _SD_SCRIPTS_KEYS.split()


def sd_scripts_differences(metadata: dict[str, str]) -> list[str]:
    """Where the file's metadata is not what sd-scripts writes (keys, and the formats readers parse)."""
    found = [f"missing {key}" for key in SD_SCRIPTS_KEYS if key not in metadata]
    found += [f"{k} is not a str() of a value: {v!r}" for k, v in metadata.items() if v in ("", "null")]
    checks = {
        "ss_session_id": metadata.get("ss_session_id", "").isdigit(),
        "ss_optimizer": metadata.get("ss_optimizer", "").startswith("torch.optim."),
        "ss_network_dropout": metadata.get("ss_network_dropout") == "None",
        "modelspec.sai_model_spec": metadata.get("modelspec.sai_model_spec") == "1.0.1",
        "ss_bucket_info": '"buckets"' in metadata.get("ss_bucket_info", ""),
        "ss_datasets": '"subsets"' in metadata.get("ss_datasets", ""),
        # sd-scripts' own words when the base model is a diffusers folder, not one file
        "ss_sd_model_hash": re.fullmatch(r"[0-9a-f]{8}|IsADirectory", metadata.get("ss_sd_model_hash", "")),
        "ss_new_sd_model_hash": re.fullmatch(
            r"[0-9a-f]{64}|IsADirectory", metadata.get("ss_new_sd_model_hash", "")
        ),
    }
    found += [
        f"{key} not in sd-scripts' format: {metadata.get(key)!r}" for key, ok in checks.items() if not ok
    ]
    return found


def test_kohya_file_names_every_targeted_module_and_reloads_exactly(tmp_path, dataset, tiny_sd):
    result = train(config(tmp_path, dataset, tiny_sd))
    tensors, metadata = read(Path(result.output_file))
    assert key_problems(tensors, metadata) == [] and non_finite(tensors) == []
    assert result.steps == 4 and len(result.losses) == 4 and result.samples

    base = load_base_model(str(tiny_sd))
    expected = {
        "lora_unet_" + name.replace(".", "_")
        for name, _ in base.unet.named_modules()
        if any(name.endswith(target) for target in UNET_TARGETS) and ".attentions." in name
    } | {
        "lora_te_text_model_" + name.replace(".", "_")
        for name, _ in base.text_encoder.named_modules()
        if any(name.endswith(target) for target in TEXT_ENCODER_TARGETS)
    }
    assert {key.split(".")[0] for key in tensors} == expected
    assert not any(key.startswith("lora_te1_") for key in tensors)
    assert {float(v) for k, v in tensors.items() if k.endswith(".alpha")} == {2.0}
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "2.0"
    assert (
        metadata["ss_num_train_images"] == "8"
        and metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    )
    assert '"ohwx man": 4' in metadata["ss_tag_frequency"]
    assert sd_scripts_differences(metadata) == []

    # Reference: the trained adapters from the accelerate checkpoint, in peft form.
    checkpoint = next((tmp_path / "work" / "runs" / "test" / "checkpoints").glob("epoch-*"))
    trained = load_base_model(str(tiny_sd))
    torch.manual_seed(0)
    add_adapters(trained.unet, trained.text_encoder, 4, 2.0)
    load_adapter_state_dict(trained.unet, load_file(checkpoint / "lora_unet.safetensors"))
    load_adapter_state_dict(trained.text_encoder, load_file(checkpoint / "lora_text_encoder.safetensors"))

    from diffusers import StableDiffusionPipeline

    reloaded = load_base_model(str(tiny_sd))
    pipeline = StableDiffusionPipeline(
        vae=reloaded.vae,
        text_encoder=reloaded.text_encoder,
        tokenizer=reloaded.tokenizer,
        unet=reloaded.unet,
        scheduler=reloaded.noise_scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.load_lora_weights(str(Path(result.output_file).parent), weight_name="x.safetensors")
    ids = base.tokenizer(
        ["ohwx man, a photo"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    sample, step = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([500])
    with torch.no_grad():
        expected_states = trained.text_encoder(ids)[0]
        reloaded_states = pipeline.text_encoder(ids)[0]
        assert (expected_states - reloaded_states).abs().max() < 1e-5
        difference = (
            trained.unet(sample, step, expected_states).sample
            - pipeline.unet(sample, step, expected_states).sample
        )
    assert difference.abs().max() < 1e-5


def test_an_interrupted_run_resumes_and_equals_an_uninterrupted_one(tmp_path, dataset, tiny_sd):
    straight = train(config(tmp_path / "a", dataset, tiny_sd, epochs=3, sample_prompts=[]))

    class Interrupted(Exception):
        pass

    def crash_after_first(epoch: int) -> None:
        if epoch == 1:
            raise Interrupted

    interrupted = config(tmp_path / "b", dataset, tiny_sd, epochs=3, sample_prompts=[])
    with pytest.raises(Interrupted):
        train(interrupted, on_epoch_end=crash_after_first)
    resumed = train(interrupted)
    assert resumed.resumed_from_epoch == 1 and resumed.steps == straight.steps == 12
    first, second = load_file(straight.output_file), load_file(resumed.output_file)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_latents_come_from_the_cache_on_a_retrain_without_calling_the_encoder(
    tmp_path, dataset, tiny_sd, monkeypatch
):
    first = train(config(tmp_path, dataset, tiny_sd, sample_prompts=[]))
    assert first.latents_encoded == 4 and first.latents_cached == 0

    from diffusers import AutoencoderKL

    def refuse(*args, **kwargs):
        raise AssertionError("the VAE encoder ran although every latent is cached")

    monkeypatch.setattr(AutoencoderKL, "encode", refuse)
    again = train(config(tmp_path, dataset, tiny_sd, sample_prompts=[], training_key="other"))
    assert again.latents_encoded == 0 and again.latents_cached == 4


def test_single_file_base_model_and_training_options(tmp_path, dataset, tiny_sd):
    flipped = build_dataset(tmp_path / "flipped", flip_aug=True)
    result = train(
        config(
            tmp_path,
            flipped,
            tiny_sd / "tiny-sd.safetensors",
            base_config=str(tiny_sd),
            vae=str(tiny_sd / "tiny-vae.safetensors"),
            train_text_encoder=False,
            clip_skip=2,
            min_snr_gamma=5.0,
            noise_offset=0.05,
            lr_scheduler="cosine",
            lr_warmup_steps=1,
            gradient_checkpointing=True,
            sample_prompts=[],
        )
    )
    tensors, metadata = read(Path(result.output_file))
    assert not any(k.startswith("lora_te_") for k in tensors) and non_finite(tensors) == []
    assert result.text_encoded == 4 and result.latents_encoded == 8  # flips encoded too
    assert metadata["ss_clip_skip"] == "2" and metadata["ss_flip_aug"] == "True"
    assert sd_scripts_differences(metadata) == [] and metadata["modelspec.encoder_layer"] == "2"
    single_file = (tiny_sd / "tiny-sd.safetensors").read_bytes()
    assert metadata["ss_new_sd_model_hash"] == hashlib.sha256(single_file).hexdigest()
    assert metadata["ss_sd_model_hash"] == hashlib.sha256(single_file[0x100000:0x110000]).hexdigest()[:8]
    assert all(loss == loss for loss in result.losses)

    shuffled = train(
        config(
            tmp_path / "s",
            build_dataset(tmp_path / "shuffled", shuffle_caption=True),
            tiny_sd,
            train_text_encoder=False,
            sample_prompts=[],
        )
    )
    assert shuffled.text_encoded == 0  # captions change every step: nothing to cache
    assert re.match(r"^[0-9a-f]{64}$", read(Path(shuffled.output_file))[1]["sshs_model_hash"])


def test_the_diffusers_copy_names_text_model_and_loads_like_the_kohya_file(tmp_path, dataset, tiny_sd):
    from diffusers import StableDiffusionPipeline

    result = train(config(tmp_path, dataset, tiny_sd, export_diffusers=True, sample_prompts=[]))
    folder = Path(result.output_file).with_name("x-diffusers")
    keys = list(load_file(folder / "pytorch_lora_weights.safetensors"))
    te_keys = [k for k in keys if k.startswith("text_encoder.")]
    assert te_keys and all(k.startswith("text_encoder.text_model.") for k in te_keys)

    def pipeline():
        base = load_base_model(str(tiny_sd))
        return StableDiffusionPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
            scheduler=base.noise_scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip

    copy, kohya = pipeline(), pipeline()
    copy.load_lora_weights(str(folder))
    kohya.load_lora_weights(str(Path(result.output_file).parent), weight_name="x.safetensors")
    ids = kohya.tokenizer(["ohwx man"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    sample, step = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([400])
    with torch.no_grad():
        states = kohya.text_encoder(ids)[0]
        assert (copy.text_encoder(ids)[0] - states).abs().max() == 0
        assert (
            copy.unet(sample, step, states).sample - kohya.unet(sample, step, states).sample
        ).abs().max() < 1e-6
