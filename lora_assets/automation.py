"""Declarative automation: what each asset does by itself when its inputs change.

The CPU stages are eager with an early cut-off: they run when a dependency's *data version*
changes (not merely when it was rematerialized), when their own code version changes, or when a
subject partition is new. A rerun whose output is byte-identical keeps its data version, so
nothing below it is requested. Training is the expensive stage: per subject it runs eagerly too,
or only at its cron tick, as `[training] automation` says (default: `$LORA_ASSETS_TRAINING_AUTOMATION`,
itself defaulting to `cron`).
"""

import os
import warnings
from typing import Literal, cast

import dagster as dg

from lora_assets.layout import DataLayout, view_layout
from lora_assets.settings import SettingsError, load_subject_settings

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
    """The default training mode, from `$LORA_ASSETS_TRAINING_AUTOMATION` (default `cron`)."""
    mode = os.environ.get(TRAINING_AUTOMATION_ENV, "cron").strip().lower()
    if mode not in ("eager", "cron"):
        raise ValueError(f"${TRAINING_AUTOMATION_ENV} must be 'eager' or 'cron', not {mode!r}")
    return cast(TrainingAutomation, mode)


def subject_training_mode(layout: DataLayout, subject: str, default: TrainingAutomation) -> str | None:
    """A subject's `[training] automation`, else `default`; None when its subject.toml is broken
    (the folder sensor reports that; nothing is trained meanwhile)."""
    try:
        settings = load_subject_settings(layout.settings_file(subject), subject)
    except (SettingsError, ValueError, OSError):
        return None
    return settings.training.automation or default


class SubjectTrainingMode(dg.AutomationCondition):
    """True for the subjects whose training automation is `mode`: per-subject settings decide,
    read at each evaluation (runs in the code server: see `automation_sensor`)."""

    def __init__(self, mode: TrainingAutomation, data_root: str, default: TrainingAutomation) -> None:
        self.mode = mode
        self.data_root = data_root
        self.default = default

    @property
    def name(self) -> str:
        return f"[training] automation is '{self.mode}'"

    @property
    def requires_cursor(self) -> bool:
        return False

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        layout = view_layout(self.data_root)
        candidates = context.candidate_subset
        subjects = {
            subject
            for subject in candidates.expensively_compute_partition_keys()
            if subject_training_mode(layout, subject, self.default) == self.mode
        }
        return dg.AutomationResult(context, candidates.compute_intersection_with_partition_keys(subjects))


def training_cron() -> str:
    """The training cron from `$LORA_ASSETS_RETRAIN_CRON` (default Sundays 03:00)."""
    return os.environ.get(TRAINING_CRON_ENV, DEFAULT_TRAINING_CRON)


def training_condition(data_root: str) -> AC:
    """The `lora` asset's condition: eager for the subjects in eager mode, on the cron for the rest."""
    default = training_automation()
    return (eager_on_new_data() & SubjectTrainingMode("eager", data_root, default)) | (
        on_cron_if_changed(training_cron()) & SubjectTrainingMode("cron", data_root, default)
    )


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    automation_sensor = dg.AutomationConditionSensorDefinition(
        "lora_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        # `SubjectTrainingMode` is Python of ours: it runs where the code is, not in the daemon.
        use_user_code_server=True,
        description="Evaluates every asset's automation condition: eager CPU stages; training eager or "
        f"on cron per subject ([training] automation, default ${TRAINING_AUTOMATION_ENV}). Running by "
        "default, so an edit propagates by itself.",
    )
