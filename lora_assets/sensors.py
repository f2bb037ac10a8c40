"""Sensors: new subject folders become partitions; changed photo folders trigger ingest."""

import json

import dagster as dg

from lora_assets.jobs import raw_images_job
from lora_assets.partitions import SUBJECTS_PARTITION, subjects_partitions
from lora_assets.storage import DataRoot
from lora_assets.subjects import folder_fingerprint, list_photo_files


@dg.sensor(
    name="subject_folders",
    job=raw_images_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches data/subjects/*/: a new folder adds a subject partition; a folder whose "
    "photos were added, removed or replaced requests a `raw_images` run for that subject only.",
)
def subject_folders_sensor(context: dg.SensorEvaluationContext, data_root: DataRoot) -> dg.SensorResult:
    layout = data_root.layout()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(SUBJECTS_PARTITION))
    names = layout.subject_names()
    fingerprints: dict[str, str] = {}
    run_requests: list[dg.RunRequest] = []
    for name in names:
        images = layout.images_dir(name)
        fingerprint = folder_fingerprint(images)
        fingerprints[name] = fingerprint
        if seen.get(name) != fingerprint and list_photo_files(images):
            run_requests.append(dg.RunRequest(partition_key=name, run_key=f"{name}:{fingerprint[:16]}"))
    new = [name for name in names if name not in known]
    if new:
        context.log.info(f"new subjects: {', '.join(new)}")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[subjects_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps(fingerprints, sort_keys=True),
    )
