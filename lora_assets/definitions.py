"""The one `Definitions` object of the project."""

import dagster as dg

from lora_assets.assets.captions import captions
from lora_assets.assets.dataset import dataset_zip
from lora_assets.assets.dedup import deduped_images
from lora_assets.assets.filtering import filtered_images
from lora_assets.assets.ingest import raw_images
from lora_assets.assets.sources import settings_sources, subject_photos
from lora_assets.assets.training import lora
from lora_assets.automation import automation_sensor, training_condition
from lora_assets.checks import lora_keys_and_metadata, lora_loads_in_diffusers, lora_weights_finite
from lora_assets.jobs import observe_sources_job, raw_images_job, training_chain_job
from lora_assets.schedules import weekly_retrain
from lora_assets.sensors import subject_folders_sensor
from lora_assets.storage import DataRoot, default_data_root


def build_definitions(data_root: str | None = None) -> dg.Definitions:
    """Definitions over a data root (default: `$LORA_ASSETS_DATA_ROOT` or `./data`); tests pass their own."""
    condition = training_condition()
    return dg.Definitions(
        assets=[
            *settings_sources,
            subject_photos,
            raw_images,
            deduped_images,
            filtered_images,
            captions,
            dataset_zip,
            # Read at load time, so `$LORA_ASSETS_TRAINING_AUTOMATION` applies without a code change.
            lora.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition)),
        ],
        asset_checks=[lora_keys_and_metadata, lora_weights_finite, lora_loads_in_diffusers],
        jobs=[raw_images_job, observe_sources_job, training_chain_job],
        schedules=[weekly_retrain],
        sensors=[subject_folders_sensor, automation_sensor],
        resources={
            "data_root": DataRoot(path=data_root or default_data_root()),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
    )


defs = build_definitions()
