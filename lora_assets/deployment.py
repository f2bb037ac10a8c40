"""The three deployment shapes, chosen by configuration (see README "Scaling out"):

1. one machine (default): the multiprocess executor, training as a subprocess of the `lora` step;
2. CPU host + GPU host(s): `$LORA_ASSETS_CELERY_BROKER` selects the dagster-celery executor
   (`captions` and `lora` go to the `gpu` queue), `$LORA_ASSETS_PIPES_BUCKET` moves the Pipes
   context and messages of the training process to S3, the data root is an `s3://` URL;
3. Kubernetes: `$LORA_ASSETS_TRAINING=kubernetes` runs training in a pod of
   `$LORA_ASSETS_TRAINING_IMAGE` requesting `$LORA_ASSETS_TRAINING_GPUS` `nvidia.com/gpu`
   (`PipesK8sClient`), with the same Postgres instance and S3 data root.
"""

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any, Literal

import dagster as dg
from pydantic import Field

CELERY_BROKER_ENV = "LORA_ASSETS_CELERY_BROKER"
CELERY_BACKEND_ENV = "LORA_ASSETS_CELERY_BACKEND"
PIPES_BUCKET_ENV = "LORA_ASSETS_PIPES_BUCKET"
TRAINING_ENV = "LORA_ASSETS_TRAINING"
TRAINING_MODULE = "lora_assets.training.pipes_entry"
GPU_QUEUE = "gpu"
# Steps that need the GPU: routed to the Celery queue the GPU workers listen on.
GPU_STEP_TAGS = {"dagster-celery/queue": GPU_QUEUE}
# Celery settings the executor and the workers share: STARTED states name the worker (so a lost
# worker can be found, see monitoring.py) and carry the task's arguments; one task at a time.
CELERY_SETTINGS = {
    "task_track_started": True,
    "result_extended": True,
    "worker_prefetch_multiplier": 1,
}


def executor() -> dg.ExecutorDefinition | None:
    """The Celery executor when a broker is configured, else None (Dagster's default)."""
    broker = os.environ.get(CELERY_BROKER_ENV)
    if not broker:
        return None
    from dagster_celery import celery_executor

    backend_env = CELERY_BACKEND_ENV if os.environ.get(CELERY_BACKEND_ENV) else CELERY_BROKER_ENV
    return celery_executor.configured(
        {
            "broker": {"env": CELERY_BROKER_ENV},
            "backend": {"env": backend_env},
            "config_source": CELERY_SETTINGS,
        },
        name="celery",
    )


class TrainingLauncher(dg.ConfigurableResource):
    """Where the training process of `lora` runs: a subprocess of the step (on whatever host the
    step runs) or a Kubernetes pod. Either way it is `python -m lora_assets.training.pipes_entry`."""

    mode: Literal["subprocess", "kubernetes"] = "subprocess"
    pipes_bucket: str | None = Field(
        None, description="S3 bucket for the Pipes context and messages (no shared disk needed)"
    )
    image: str | None = Field(None, description="kubernetes: the image built from the repo's Dockerfile")
    namespace: str = "default"
    gpus: int = Field(1, ge=0, description="kubernetes: nvidia.com/gpu requested by the pod")
    credentials_secret: str = Field(
        "lora-assets-s3", description="kubernetes: Secret with AWS_* variables for the data root"
    )

    def run(
        self, context: dg.AssetExecutionContext, extras: Mapping[str, Any]
    ) -> dg.PipesClientCompletedInvocation:
        """Start the training process and wait for it, its logs and result coming back over Pipes."""
        channels = self.pipes_channels()
        if self.mode == "kubernetes":
            from dagster_k8s import PipesK8sClient

            return PipesK8sClient(**channels).run(
                context=context,
                image=self.image,
                command=self.command(),
                namespace=self.namespace,
                base_pod_spec=self.pod_spec(),
                extras=dict(extras),
            )
        return dg.PipesSubprocessClient(**channels).run(
            command=self.command(), context=context, extras=extras
        )

    def command(self) -> list[str]:
        """The training process. As a subprocess it is killed with its parent (setpriv's
        parent-death signal on Linux): a step whose worker dies must not leave training on the GPU."""
        if self.mode == "kubernetes":
            return ["python", "-m", TRAINING_MODULE]
        command = [sys.executable, "-m", TRAINING_MODULE]
        setpriv = shutil.which("setpriv")
        return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command

    def pipes_channels(self) -> dict[str, Any]:
        """S3 context injector and message reader when a bucket is set, else the clients' defaults."""
        if not self.pipes_bucket:
            return {}
        import boto3
        from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

        client = boto3.client("s3")  # endpoint and credentials from the environment
        return {
            "context_injector": PipesS3ContextInjector(
                bucket=self.pipes_bucket, client=client, key_prefix="pipes"
            ),
            "message_reader": PipesS3MessageReader(bucket=self.pipes_bucket, client=client, interval=1.0),
        }

    def pod_spec(self) -> dict[str, Any]:
        """The training pod: the GPUs it requests, the data root's credentials, never restarted
        (a failed run is retried by Dagster, resuming from the checkpoint in object storage)."""
        return {
            "restart_policy": "Never",
            "containers": [
                {
                    "resources": {"limits": {"nvidia.com/gpu": self.gpus}},
                    "env_from": [{"secret_ref": {"name": self.credentials_secret}}],
                }
            ],
        }


def training_launcher() -> TrainingLauncher:
    """The launcher the environment asks for (see module docstring)."""
    return TrainingLauncher(
        mode="kubernetes" if os.environ.get(TRAINING_ENV) == "kubernetes" else "subprocess",
        pipes_bucket=os.environ.get(PIPES_BUCKET_ENV) or None,
        image=os.environ.get("LORA_ASSETS_TRAINING_IMAGE") or None,
        namespace=os.environ.get("LORA_ASSETS_K8S_NAMESPACE", "default"),
        gpus=int(os.environ.get("LORA_ASSETS_TRAINING_GPUS", "1")),
    )
