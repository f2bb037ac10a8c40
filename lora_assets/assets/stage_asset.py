"""The decorator every data stage's asset shares: partitioned per subject, eager on new data,
downstream of the previous stage and of its own settings source (named from `stages.PIPELINE`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from lora_assets.assets.sources import settings_source
from lora_assets.automation import eager_on_new_data
from lora_assets.partitions import subjects_partitions
from lora_assets.stages import stage_named


def stage_asset(
    stage: str, upstream: Any, *, code_version: str, kinds: set[str], description: str
) -> Callable[[Callable[..., dg.MaterializeResult]], dg.AssetsDefinition]:
    """`@dg.asset` for the asset of `stage`, reading `upstream` (an asset or source)."""
    return dg.asset(
        name=stage_named(stage).asset,
        partitions_def=subjects_partitions,
        automation_condition=eager_on_new_data(),
        deps=[upstream, settings_source(stage)],
        code_version=code_version,
        group_name="dataset",
        kinds=kinds,
        description=description,
    )
