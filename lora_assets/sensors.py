"""The subject-folder sensor: new folders become partitions, and every edit a user makes to a
subject (photos added, removed or replaced; `subject.toml` or a caption `.txt` edited) is
reported as a new data version of the matching source asset. The automation sensor then requests
exactly the affected (asset, subject) pairs; this sensor launches no runs itself.
"""

import json
import warnings

import dagster as dg

from lora_assets.assets.sources import source_versions
from lora_assets.partitions import SUBJECTS_PARTITION, subjects_partitions
from lora_assets.settings import SettingsError
from lora_assets.storage import DataRoot
from lora_assets.subjects import InvalidSubjectName, list_photo_files

DATA_VERSION_TAG = "dagster/data_version"


def _observation(source: str, subject: str, version: str) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=source, partition=subject, tags={DATA_VERSION_TAG: version}, metadata={"source": "sensor"}
    )


@dg.sensor(
    name="subject_folders",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches data/subjects/*/: a new folder adds a subject partition; a changed photo "
    "folder, subject.toml or caption file is recorded as a new version of that subject's source "
    "asset, which the `lora_automation` sensor turns into runs of the affected stages only.",
)
def subject_folders_sensor(context: dg.SensorEvaluationContext, data_root: DataRoot) -> dg.SensorResult:
    layout = data_root.view()
    seen: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(SUBJECTS_PARTITION))
    folders = layout.subject_names()
    for folder in layout.invalid_subject_folders():
        context.log.warning(f"subjects/{folder!r} is not a subject: {InvalidSubjectName.RULE}")
    names = [name for name in folders if list_photo_files(layout.images_dir(name))]
    new = [name for name in folders if name not in known]
    events: list[dg.AssetObservation] = []
    cursor: dict[str, dict[str, str]] = {}
    for name in names:
        cursor[name] = {}
        for source, version_of in source_versions(layout, name).items():
            try:
                version = version_of()
            except (SettingsError, ValueError, OSError) as exc:
                context.log.error(f"subject {name!r}, {source}: {exc}")
                continue
            cursor[name][source] = version
            if seen.get(name, {}).get(source) != version:
                events.append(_observation(source, name, version))
    if new:
        context.log.info(f"new subjects: {', '.join(new)}")
    if events:
        changed = sorted({f"{e.partition}/{e.asset_key.to_user_string()}" for e in events})
        context.log.info(f"changed inputs: {', '.join(changed)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.SensorResult(
            asset_events=events,
            dynamic_partitions_requests=[subjects_partitions.build_add_request(new)] if new else [],
            cursor=json.dumps(cursor, sort_keys=True),
        )
