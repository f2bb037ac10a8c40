"""Declarative automation: what each asset does by itself when its inputs change.

The CPU stages are eager with an early cut-off: they run when a dependency's *data version*
changes (not merely when it was rematerialized), when their own code version changes, or when a
subject partition is new. A rerun whose output is byte-identical keeps its data version, so
nothing below it is requested. Training is the expensive stage: it runs eagerly too, or only at
its cron tick (the default), as chosen by `$LORA_ASSETS_TRAINING_AUTOMATION`.
"""

import os
from typing import Literal, cast

import dagster as dg

TRAINING_AUTOMATION_ENV = "LORA_ASSETS_TRAINING_AUTOMATION"
TRAINING_CRON_ENV = "LORA_ASSETS_RETRAIN_CRON"
DEFAULT_TRAINING_CRON = "0 3 * * 0"  # Sundays, 03:00
TrainingAutomation = Literal["eager", "cron"]

AC = dg.AutomationCondition


def _inputs_changed() -> AC:
    """A dependency's data version changed, this asset's code version changed, or it is new."""
    return AC.newly_missing() | AC.any_deps_match(AC.data_version_changed()) | AC.code_version_changed()


def _runnable() -> AC:
    return ~AC.any_deps_missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()


def eager_on_new_data() -> AC:
    """`AutomationCondition.eager()`, but triggered by changed data versions instead of any
    update, so a byte-identical rerun upstream requests nothing downstream."""
    return (_inputs_changed().since_last_handled() & _runnable()).with_label("eager on new data")


def on_cron_if_changed(cron: str) -> AC:
    """At each cron tick, run the partitions whose inputs changed since they last ran."""
    return (AC.cron_tick_passed(cron) & _inputs_changed().since_last_handled() & _runnable()).with_label(
        f"on cron '{cron}' if inputs changed"
    )


def training_automation() -> TrainingAutomation:
    """The training mode from `$LORA_ASSETS_TRAINING_AUTOMATION` (default `cron`)."""
    mode = os.environ.get(TRAINING_AUTOMATION_ENV, "cron").strip().lower()
    if mode not in ("eager", "cron"):
        raise ValueError(f"${TRAINING_AUTOMATION_ENV} must be 'eager' or 'cron', not {mode!r}")
    return cast(TrainingAutomation, mode)


def training_cron() -> str:
    """The training cron from `$LORA_ASSETS_RETRAIN_CRON` (default Sundays 03:00)."""
    return os.environ.get(TRAINING_CRON_ENV, DEFAULT_TRAINING_CRON)


def training_condition() -> AC:
    """The `lora` asset's condition for the configured mode."""
    return eager_on_new_data() if training_automation() == "eager" else on_cron_if_changed(training_cron())


automation_sensor = dg.AutomationConditionSensorDefinition(
    "lora_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates every asset's automation condition: eager CPU stages, training eager or "
    f"on cron (${TRAINING_AUTOMATION_ENV}). Running by default, so an edit propagates by itself.",
)
