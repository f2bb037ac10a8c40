#!/usr/bin/env bash
# The GPU figures, in one run on a lent GPU machine: the whole photos-to-LoRA job against the
# reference pipeline (issue 13's measurement), then the caption and training benchmarks. python3
# there has torch; what it lacks travels as wheels in .whl/ (benchmarks/gpu_wheels.sh makes them).
# Writes the tables to $OUT (or ./benchmarks/results). BENCHES picks: pipeline,caption,train.
set -u
out=${OUT:-benchmarks/results}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, diffusers, peft, accelerate, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$out/gpu.txt"
benches=${BENCHES:-pipeline,caption,train}
[[ $benches == *pipeline* ]] && timeout "${PIPELINE_SECONDS:-420}" python3 -m benchmarks.gpu_pipeline_bench 2>&1 | grep -vE "Warning|warn\(| DEBUG " | tee "$out/pipeline_gpu.txt"
[[ $benches == *caption* ]] && timeout "${CAPTION_SECONDS:-210}" python3 -m benchmarks.caption_bench --images "${CAPTION_IMAGES:-128}" --tokens 40 2>&1 | grep -vE "Warning|warn\(" | tee "$out/caption_gpu.txt"
[[ $benches == *train* ]] && timeout "${TRAIN_SECONDS:-330}" python3 -m benchmarks.train_bench --steps 40 --batch 8 --runs "${TRAIN_RUNS:-eager,default,reduce-overhead}" 2>&1 | grep -vE "Warning|warn\(" | tee "$out/train_gpu.txt"
