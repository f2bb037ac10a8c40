# The image of shape 3 (README "Scaling out"): the code location, run workers and training pods.
# Built by CI elsewhere (no Docker engine on the build machines); the pod body and launcher
# config that use it are tested as data (lora_assets_tests/scale/test_deployments.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DAGSTER_HOME=/opt/dagster/home
RUN apt-get update && apt-get install -y --no-install-recommends util-linux && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/lora_assets
COPY pyproject.toml README.md ./
COPY lora_assets ./lora_assets
# The CUDA build of torch that matches the cluster's driver comes from PyTorch's index.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" ".[scale]" bitsandbytes \
    && mkdir -p "$DAGSTER_HOME"
COPY deploy/kubernetes/dagster.k8s.yaml "$DAGSTER_HOME/dagster.yaml"
EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "lora_assets.definitions"]
