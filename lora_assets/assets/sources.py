"""Observable source assets: what the graph reads from the user's subject folders.

One source per stage carries the hash of that stage's effective settings, and `subject_photos`
carries a fingerprint of the photo folder (paths, sizes, mtimes). Each reports one data version
per subject partition, so Dagster marks exactly the affected (asset, subject) pairs stale.
"""

import warnings
from collections.abc import Callable

import dagster as dg

from lora_assets.captioning.pipeline import sidecar_digest_lines
from lora_assets.digests import hash_lines, short_version
from lora_assets.layout import DataLayout
from lora_assets.partitions import SUBJECTS_PARTITION, subjects_partitions
from lora_assets.settings import SettingsError, load_subject_settings
from lora_assets.stages import PIPELINE, STAGES, stage_named
from lora_assets.subjects import folder_fingerprint

SETTINGS_GROUP = "subject_inputs"
PHOTOS_SOURCE = "subject_photos"


def _observe_all(
    context: dg.OpExecutionContext, version_of: Callable[[DataLayout, str], str]
) -> dg.DataVersionsByPartition:
    """Versions for every registered subject; a subject whose version cannot be computed is logged
    and left out, so one broken `subject.toml` never hides the others' changes."""
    layout = context.resources.data_root.view()
    versions: dict[str, str] = {}
    for subject in sorted(context.instance.get_dynamic_partitions(SUBJECTS_PARTITION)):
        try:
            versions[subject] = version_of(layout, subject)
        except (SettingsError, ValueError, OSError) as exc:
            context.log.error(f"subject {subject!r}: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.DataVersionsByPartition(versions)


def stage_settings_version(layout: DataLayout, subject: str, stage: str) -> str:
    """The settings version of one stage of one subject. The captions stage also depends on the
    user's caption files (`<photo>.txt` next to the photos), so their text is part of it."""
    version = load_subject_settings(layout.settings_file(subject), subject).stage_version(stage)
    if stage == "captions":
        version = short_version(hash_lines([version, *sidecar_digest_lines(layout.images_dir(subject))]))
    return version


def photos_version(layout: DataLayout, subject: str) -> str:
    """The version of a subject's photo folder: its listing's (path, size, mtime), no bytes read."""
    return short_version(folder_fingerprint(layout.images_dir(subject)))


def source_versions(layout: DataLayout, subject: str) -> dict[str, Callable[[], str]]:
    """How to compute each source asset's version for one subject: the observable sources and the
    folder sensor both use these, so a sensor observation and a UI observation always agree."""
    versions: dict[str, Callable[[], str]] = {PHOTOS_SOURCE: lambda: photos_version(layout, subject)}
    for stage in PIPELINE:
        versions[stage.settings_source] = lambda name=stage.name: stage_settings_version(
            layout, subject, name
        )
    return versions


def _observable_source(**kwargs: object) -> Callable[[Callable], dg.SourceAsset]:
    """`dg.observable_source_asset` (beta, but the documented way to version external inputs),
    partitioned per subject, without a beta warning at every definitions load."""

    def decorate(fn: Callable) -> dg.SourceAsset:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.observable_source_asset(
                partitions_def=subjects_partitions,
                group_name=SETTINGS_GROUP,
                required_resource_keys={"data_root"},
                **kwargs,
            )(fn)

    return decorate


def _settings_source(stage: str) -> dg.SourceAsset:
    @_observable_source(
        name=stage_named(stage).settings_source,
        description=f"Hash of each subject's effective `[{stage}]` settings (subject.toml + defaults).",
    )
    def _observe(context: dg.OpExecutionContext) -> dg.DataVersionsByPartition:
        return _observe_all(context, lambda layout, subject: stage_settings_version(layout, subject, stage))

    return _observe


settings_sources: list[dg.SourceAsset] = [_settings_source(stage) for stage in STAGES]


@_observable_source(
    name=PHOTOS_SOURCE,
    description="Fingerprint of each subject's photo folder: relative paths, sizes and mtimes.",
)
def subject_photos(context: dg.OpExecutionContext) -> dg.DataVersionsByPartition:
    return _observe_all(context, photos_version)


SOURCE_KEYS: list[dg.AssetKey] = [source.key for source in [*settings_sources, subject_photos]]


def settings_source(stage: str) -> dg.SourceAsset:
    """The settings source asset of `stage`."""
    return settings_sources[STAGES.index(stage)]
