#!/usr/bin/env bash
# The CLI path of CI: materialize the whole graph for the sample subject against a fresh
# DAGSTER_HOME and data root, twice, and prove from the event log that the second run was all
# cache hits (every asset reports cache_hit / no per-image work, and no training process started).
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export DAGSTER_HOME="$scratch/home" LORA_ASSETS_DATA_ROOT="$scratch/data" OMP_NUM_THREADS=1
mkdir -p "$DAGSTER_HOME" "$LORA_ASSETS_DATA_ROOT"
cp dagster.yaml "$DAGSTER_HOME/"
cp -r data/subjects "$LORA_ASSETS_DATA_ROOT/"

.venv/bin/lora-assets models tiny
.venv/bin/lora-assets subjects sync
.venv/bin/dagster job execute -m lora_assets.definitions -j observe_subject_inputs
for pass in cold warm; do
  echo "== $pass run of the whole graph for 'sample'"
  .venv/bin/dagster asset materialize -m lora_assets.definitions --select '*' --partition sample
done
.venv/bin/python -m lora_assets_tests.ci_assert_cache_hits sample
