"""The weekly retrain: one run per subject of the whole chain; unchanged subjects are cache hits."""

import dagster as dg

from lora_assets.automation import DEFAULT_TRAINING_CRON, TRAINING_CRON_ENV, training_cron
from lora_assets.jobs import training_chain_job
from lora_assets.partitions import SUBJECTS_PARTITION


@dg.schedule(
    name="weekly_retrain",
    cron_schedule=training_cron(),
    job=training_chain_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=f"One run per subject of raw_images -> lora (cron from ${TRAINING_CRON_ENV}, default "
    f"'{DEFAULT_TRAINING_CRON}'). Stages whose inputs did not change finish as cache hits in seconds.",
)
def weekly_retrain(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    subjects = sorted(context.instance.get_dynamic_partitions(SUBJECTS_PARTITION))
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    return [dg.RunRequest(partition_key=subject, run_key=f"{subject}:{stamp}") for subject in subjects]
