"""Asset jobs the sensors, schedules and CLI launch."""

import dagster as dg

from lora_assets.assets.raw_images import raw_images
from lora_assets.assets.sources import SOURCE_KEYS

raw_images_job = dg.define_asset_job(
    "raw_images_job", selection=[raw_images], description="Ingest one subject's photo folder."
)
observe_sources_job = dg.define_asset_job(
    "observe_subject_inputs",
    selection=dg.AssetSelection.assets(*SOURCE_KEYS),
    description="Observe every subject's settings and photo folder (hashes only; no pixels read).",
    # Listings and small reads: in the orchestrator's process, never a trip through a queue.
    executor_def=dg.in_process_executor,
)

training_chain_job = dg.define_asset_job(
    "training_chain",
    selection=dg.AssetSelection.assets("lora").upstream() - dg.AssetSelection.assets(*SOURCE_KEYS),
    description="Every stage of one subject, from raw_images to lora (cache hits where nothing changed).",
)
