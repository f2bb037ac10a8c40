"""The weekly retrain: one run per subject of the whole chain; unchanged subjects are cache hits."""

import os

import dagster as dg

from lora_assets.jobs import training_chain_job
from lora_assets.partitions import SUBJECTS_PARTITION

RETRAIN_CRON_ENV = "LORA_ASSETS_RETRAIN_CRON"
DEFAULT_RETRAIN_CRON = "0 3 * * 0"  # Sundays, 03:00


@dg.schedule(
    name="weekly_retrain",
    cron_schedule=os.environ.get(RETRAIN_CRON_ENV, DEFAULT_RETRAIN_CRON),
    job=training_chain_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=f"One run per subject of raw_images -> lora (cron from ${RETRAIN_CRON_ENV}, default "
    f"'{DEFAULT_RETRAIN_CRON}'). Stages whose inputs did not change finish as cache hits in seconds.",
)
def weekly_retrain(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    subjects = sorted(context.instance.get_dynamic_partitions(SUBJECTS_PARTITION))
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    return [dg.RunRequest(partition_key=subject, run_key=f"{subject}:{stamp}") for subject in subjects]
