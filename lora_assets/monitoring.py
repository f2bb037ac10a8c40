"""Steps whose Celery worker is gone (a GPU host powered off, a worker killed).

dagster-celery's orchestrator waits for a step's task without a timeout, and Dagster's run
monitoring cannot see a worker of the default run launcher, so a run whose worker died would stay
STARTED forever, holding its `gpu` slot. With the Celery settings of `deployment.py` each started
task records its worker; the `lost_celery_workers` sensor pings those workers, and a task whose
worker missed two checks in a row is marked failed in the result backend. The run's orchestrator
then fails the run as for any failed step, run monitoring frees its slot
(`free_slots_after_run_end_seconds`), and a retry resumes training from the last checkpoint in
object storage.
"""

import json
import os
from typing import Any

import dagster as dg

from lora_assets.deployment import CELERY_BACKEND_ENV, CELERY_BROKER_ENV, CELERY_SETTINGS

CHECK_SECONDS_ENV = "LORA_ASSETS_WORKER_CHECK_SECONDS"
TASK_META = "celery-task-meta-*"


def celery_app() -> Any:
    from celery import Celery

    broker = os.environ[CELERY_BROKER_ENV]
    app = Celery("dagster", broker=broker, backend=os.environ.get(CELERY_BACKEND_ENV, broker))
    app.conf.update(CELERY_SETTINGS)
    return app


def started_tasks(app: Any) -> dict[str, dict[str, Any]]:
    """Step tasks in the STARTED state: task id -> its worker and Dagster run (Redis backend)."""
    tasks = {}
    for key in app.backend.client.scan_iter(match=TASK_META):
        meta = app.backend.decode_result(app.backend.client.get(key))
        if not meta or meta.get("status") != "STARTED":
            continue
        worker = (meta.get("result") or {}).get("hostname") or meta.get("worker")
        tasks[meta["task_id"]] = {"worker": worker, "queue": meta.get("queue")}
    return tasks


def answering_workers(app: Any, workers: set[str]) -> set[str]:
    replies = app.control.ping(destination=sorted(workers), timeout=2.0) if workers else []
    return {name for reply in replies for name in reply}


def fail_lost_tasks(app: Any, previous: set[str], log: Any) -> tuple[set[str], set[str]]:
    """(tasks failed now, tasks whose worker missed this check): a task is failed when its worker
    misses two checks in a row (a busy worker still answers pings: Celery answers them in its
    main process, not in the pool running the step)."""
    tasks = started_tasks(app)
    alive = answering_workers(app, {t["worker"] for t in tasks.values() if t["worker"]})
    suspects = {task for task, info in tasks.items() if info["worker"] not in alive}
    lost = suspects & previous
    for task in sorted(lost):
        worker = tasks[task]["worker"]
        message = f"Celery worker {worker} stopped answering while running this step (task {task})"
        app.backend.mark_as_failure(task, RuntimeError(message))
        log.error(message)
    return lost, suspects - lost


@dg.sensor(
    name="lost_celery_workers",
    minimum_interval_seconds=int(os.environ.get(CHECK_SECONDS_ENV, "30")),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails the step of a Celery worker that stopped answering (see monitoring.py), so "
    "its run ends and its gpu slot is freed instead of waiting forever.",
)
def lost_celery_workers(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    previous = set(json.loads(context.cursor)) if context.cursor else set()
    lost, suspects = fail_lost_tasks(celery_app(), previous, context.log)
    context.update_cursor(json.dumps(sorted(suspects)))
    return dg.SkipReason(f"failed {len(lost)} lost steps; {len(suspects)} workers not answering")
