"""The one `Definitions` object of the project."""

import dagster as dg

from lora_assets.assets.captions import captions
from lora_assets.assets.dataset_zip import dataset_zip
from lora_assets.assets.deduped_images import deduped_images
from lora_assets.assets.filtered_images import filtered_images
from lora_assets.assets.lora import lora
from lora_assets.assets.raw_images import raw_images
from lora_assets.assets.sources import settings_sources, subject_photos
from lora_assets.automation import automation_sensor, training_condition
from lora_assets.checks import lora_checks
from lora_assets.deployment import executor, training_launcher
from lora_assets.jobs import observe_sources_job, raw_images_job, training_chain_job
from lora_assets.layout import default_data_root
from lora_assets.monitoring import lost_celery_workers
from lora_assets.recovery import dead_runs_sensor, recovering
from lora_assets.schedules import weekly_retrain
from lora_assets.sensors import subject_folders_sensor
from lora_assets.storage import DataRoot


def build_definitions(data_root: str | None = None) -> dg.Definitions:
    """Definitions over a data root (default: `$LORA_ASSETS_DATA_ROOT` or `./data`); tests pass their own.
    The executor and where training runs follow the environment (`deployment.py`)."""
    root = data_root or default_data_root()
    condition = training_condition(root)
    celery = executor()
    return dg.Definitions(
        assets=[
            *settings_sources,
            subject_photos,
            raw_images,
            deduped_images,
            filtered_images,
            captions,
            dataset_zip,
            # Built here: it reads each subject's [training] automation under this data root.
            lora.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition)),
        ],
        asset_checks=[lora_checks],
        jobs=[raw_images_job, observe_sources_job, training_chain_job],
        schedules=[weekly_retrain],
        sensors=[
            subject_folders_sensor,
            automation_sensor,
            dead_runs_sensor,
            *([lost_celery_workers] if celery else []),
        ],
        resources={
            "data_root": DataRoot(path=root),
            "training_launcher": training_launcher(),
        },
        executor=recovering(celery or dg.multiprocess_executor),
    )


defs = build_definitions()
