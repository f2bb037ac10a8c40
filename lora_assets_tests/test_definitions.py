import subprocess
import sys
from pathlib import Path

import dagster as dg

from lora_assets.definitions import defs
from lora_assets.settings import STAGES

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_sources_assets_jobs_and_sensors():
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw_images", "subject_photos", *(f"{stage}_settings" for stage in STAGES)} <= keys
    assert defs.resolve_job_def("observe_subject_inputs") is not None
    assert defs.resolve_sensor_def("subject_folders") is not None
    assert isinstance(defs.resolve_assets_def("raw_images").partitions_def, dg.DynamicPartitionsDefinition)


def test_dagster_definitions_validate_passes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "lora_assets.definitions"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All code locations passed validation" in result.stderr + result.stdout
