"""Runs whose orchestrator died (`kill -9` of `dagster asset materialize`, a closed terminal, a
crashed machine) are recovered with no manual step.

Every run of this code location records which process orchestrates it (host, boot, pid and the
pid's start time, so a reused pid is not mistaken for it). Before a run executes anything, and
at every tick of the `dead_runs` sensor when the daemon runs, runs still marked as started whose
orchestrator on this host is gone are marked failed, and pool slots held by runs that ended are
freed: the next run does not wait forever on the `gpu` slot, and training resumes from its last
checkpoint. A training step whose run ended or whose orchestrator died stops itself (and with it
its training process, which dies with its parent): no orphan keeps training on the GPU.
"""

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

ORCHESTRATOR_TAG = "lora_assets/orchestrator"
WATCH_SECONDS = 2.0
ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _start_ticks(pid: int) -> str | None:
    """The process's start time since boot (Linux), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_identity(pid: int | None = None) -> str:
    """`host|boot|pid|start`: names one process for as long as the machine stays up."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}|{_boot_id()}|{pid}|{_start_ticks(pid)}"


def is_alive(identity: str) -> bool | None:
    """Whether the process named by `identity` runs; None when it is on another host (unknowable
    from here) or the identity is not one of ours."""
    parts = identity.split("|")
    if len(parts) != 4:
        return None
    host, boot, pid, start = parts
    if host != socket.gethostname():
        return None
    if boot != _boot_id():
        return False  # the machine rebooted since
    return _start_ticks(int(pid)) == start


def reap_dead_runs(instance: dg.DagsterInstance, log: Any) -> list[str]:
    """Fail the runs whose orchestrator on this host is gone and free the pool slots of runs that
    ended; returns the ids of the runs failed now."""
    failed = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE)):
        run = record.dagster_run
        identity = run.tags.get(ORCHESTRATOR_TAG)
        if identity and is_alive(identity) is False:
            message = f"run {run.run_id[:8]}: its orchestrator ({identity.split('|')[2]}) died; marked failed"
            instance.report_run_failed(run, message)
            log.warning(message)
            failed.append(run.run_id)
    storage = instance.event_log_storage
    for pool in storage.get_concurrency_keys():
        for run_id in storage.get_concurrency_info(pool).active_run_ids:
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                storage.free_concurrency_slots_for_run(run_id)
                log.info(f"freed the {pool} slots of run {run_id[:8]}, which ended")
    return failed


class RecoveringExecutor(dg.Executor):
    """Any executor, preceded by the orchestrator's record and the reaping of dead runs."""

    def __init__(self, inner: dg.Executor) -> None:
        self.inner = inner

    @property
    def retries(self) -> Any:
        return self.inner.retries

    def __getattr__(self, name: str) -> Any:
        """The rest is the inner executor's: dagster-celery's loop reads `app_args()`, `broker`..."""
        return getattr(self.inner, name)

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[dg.DagsterEvent]:
        instance, run_id = plan_context.instance, plan_context.run_id
        instance.add_run_tags(run_id, {ORCHESTRATOR_TAG: process_identity()})
        reap_dead_runs(instance, plan_context.log)
        yield from self.inner.execute(plan_context, execution_plan)


def recovering(inner: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """`inner` (multiprocess, Celery…) with dead-run recovery before each run (see module doc)."""

    def create(init_context: Any) -> dg.Executor:
        return RecoveringExecutor(inner.executor_creation_fn(init_context))

    return dg.ExecutorDefinition(
        name=inner.name,
        config_schema=inner.config_schema,
        requirements=inner.get_requirements,
        executor_creation_fn=create,
        description=inner.description,
    )


@contextmanager
def stop_with_run(context: dg.AssetExecutionContext) -> Iterator[None]:
    """While the block runs, a watchdog ends this step process when its run has ended (marked
    failed, cancelled) or its orchestrator on this host died: the training process, started
    with a parent-death signal, goes with it."""
    instance, run_id = context.instance, context.run_id
    stored = instance.get_run_by_id(run_id)  # the step's copy of the run predates the tag
    orchestrator = (stored.tags if stored else {}).get(ORCHESTRATOR_TAG, "")
    done = threading.Event()

    def watch() -> None:
        while not done.wait(WATCH_SECONDS):
            run = instance.get_run_by_id(run_id)
            if (run is not None and run.is_finished) or (orchestrator and is_alive(orchestrator) is False):
                os._exit(70)  # EX_SOFTWARE: nothing left to report to

    thread = threading.Thread(target=watch, name="stop-with-run", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


@dg.sensor(
    name="dead_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails runs whose orchestrator on this host died and frees the pool slots of runs "
    "that ended, so a killed run never blocks the gpu pool (see recovery.py).",
)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    started = time.monotonic()
    failed = reap_dead_runs(context.instance, context.log)
    return dg.SkipReason(f"{len(failed)} dead runs failed ({time.monotonic() - started:.1f} s)")
