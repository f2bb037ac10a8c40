"""The deployment files as data: the Postgres instance against a real server, the Kubernetes
launcher and the training pod (no cluster here), the image's Dockerfile."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import kubernetes
import yaml
from dagster_k8s.pipes import build_pod_body

from lora_assets.deployment import TrainingLauncher
from lora_assets_tests.conftest import Graph, add_subject

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def postgres_env(stack, monkeypatch) -> None:
    for name, value in {
        "LORA_ASSETS_PG_USER": stack.pg.user,
        "LORA_ASSETS_PG_PASSWORD": "",
        "LORA_ASSETS_PG_HOST": stack.pg.host,
        "LORA_ASSETS_PG_PORT": str(stack.pg.port),
        "LORA_ASSETS_PG_DB": stack.pg.db,
        "LORA_ASSETS_LOGS_BUCKET": stack.s3.bucket,
    }.items():
        monkeypatch.setenv(name, value)


def test_the_postgres_instance_file_runs_the_graph_with_logs_in_object_storage(
    stack, s3_env, monkeypatch, tmp_path, layout
):
    postgres_env(stack, monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.postgres.yaml", home / "dagster.yaml")
    add_subject(layout, "alice", ["citrus-slices.jpg", "honey-bee-on-aster.jpg"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        graph = Graph(layout, instance)
        graph.register("alice")
        graph.observe()
        result = graph.materialize("raw_images,deduped_images", "alice")
        records = instance.fetch_materializations(dg.AssetKey("deduped_images"), limit=1).records
        assert records and records[0].run_id == result.run_id
        assert instance.compute_log_manager.__class__.__name__ == "S3ComputeLogManager"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_the_kubernetes_launcher_config_loads_and_the_training_pod_requests_a_gpu(
    stack, s3_env, monkeypatch, tmp_path
):
    postgres_env(stack, monkeypatch)
    monkeypatch.setenv("LORA_ASSETS_IMAGE", "registry.example/lora-assets:1")
    kubeconfig = tmp_path / "kubeconfig"  # a syntactically valid config of a cluster that is not there
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    config = yaml.safe_load((DEPLOY / "kubernetes" / "dagster.k8s.yaml").read_text())
    config["run_launcher"]["config"].update(
        {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "K8sRunLauncher"
        assert (
            launcher.job_image == "registry.example/lora-assets:1" and launcher.job_namespace == "lora-assets"
        )

    training = TrainingLauncher(mode="kubernetes", image="registry.example/lora-assets:1", gpus=2)
    pod = build_pod_body(
        "lora-train-alice", training.image, training.command(), {}, None, training.pod_spec()
    )
    body = kubernetes.client.ApiClient().sanitize_for_serialization(pod)
    (container,) = body["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["image"] == "registry.example/lora-assets:1"
    assert container["command"] == ["python", "-m", "lora_assets.training.pipes_entry"]
    assert container["envFrom"] == [{"secretRef": {"name": "lora-assets-s3"}}]
    assert body["spec"]["restartPolicy"] == "Never"


def test_the_dockerfile_installs_the_scale_extra_and_the_kubernetes_instance():
    text = (REPO / "Dockerfile").read_text()
    assert '".[scale]"' in text and "deploy/kubernetes/dagster.k8s.yaml" in text
    assert "lora_assets.definitions" in text
