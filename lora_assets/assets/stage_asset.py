"""The decorator every data stage's asset shares: partitioned per subject, eager on new data,
downstream of the previous stage and of its own settings source (named from `stages.PIPELINE`),
computed on the subject's files pulled into place (see `SubjectRun.open`)."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.
from collections.abc import Callable
from typing import Any

import dagster as dg

from lora_assets.assets.sources import settings_source
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.automation import eager_on_new_data
from lora_assets.partitions import subjects_partitions
from lora_assets.stages import stage_named
from lora_assets.storage import DataRoot

Compute = Callable[[SubjectRun], dg.MaterializeResult]


def stage_asset(
    stage: str,
    upstream: Any,
    *,
    code_version: str,
    kinds: set[str],
    description: str,
    op_tags: dict[str, str] | None = None,
) -> Callable[[Compute], dg.AssetsDefinition]:
    """The asset of `stage`, reading `upstream` (an asset or source), from a function of the run;
    `op_tags` route its step (e.g. to the GPU queue)."""
    asset = stage_named(stage).asset

    def decorate(compute: Compute) -> dg.AssetsDefinition:
        def materialize(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
            with SubjectRun.open(context, data_root, asset) as run:
                return compute(run)

        return dg.asset(
            name=asset,
            partitions_def=subjects_partitions,
            automation_condition=eager_on_new_data(),
            deps=[upstream, settings_source(stage)],
            code_version=code_version,
            group_name="dataset",
            kinds=kinds,
            description=description,
            op_tags=op_tags,
        )(materialize)

    return decorate
