#!/usr/bin/env bash
# Wheels for the GPU machine (python 3.12, x86-64, its own CUDA torch, no internet): what this
# project's virtual environment holds, pinned to the versions tested here, less what that image
# already has in a version we accept (torch and CUDA, numpy, pandas, pyarrow, scipy, pillow, ...;
# ../.library/device/KINDS.md) and the scale-out and dev extras, so the lot stays under the
# 64 MiB that travels. benchmarks/run_on_gpu.sh installs them with --no-deps. Run here, once.
set -euo pipefail
dest=${1:-.whl}
mkdir -p "$dest"
.venv/bin/pip freeze --exclude-editable \
    | grep -viE '^(torch|triton|nvidia-|sympy|networkx|numpy|pandas|pyarrow|scipy|matplotlib|pillow=|fonttools|kiwisolver|contourpy|grpcio|uvloop|hf.xet|pywavelets|pytest|ruff|playwright|seaweedfs|pyee|greenlet|dagster.webserver|dagster.(aws|celery|k8s|postgres)|boto|s3|aiobotocore|kubernetes|psycopg|celery|kombu|redis|cryptography|aiohttp|pygments|pyyaml|tokenizers|safetensors|accelerate|regex|requests|urllib3|rich)' \
    >"$dest/requirements.txt"
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$dest" -r "$dest/requirements.txt"
du -sh "$dest"
