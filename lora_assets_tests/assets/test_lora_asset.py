"""The `lora` asset through Dagster: Pipes subprocess training, checks, caching, schedule."""

import datetime

import dagster as dg
import pytest

from lora_assets.schedules import weekly_retrain
from lora_assets_tests.conftest import add_subject, tiny_settings

CHAIN = "raw_images,deduped_images,filtered_images,captions,dataset_zip,lora"


@pytest.fixture
def subject(graph, tiny_blip, tiny_sd):
    settings = tiny_settings(tiny_blip, tiny_sd)
    add_subject(
        graph.layout,
        "alice",
        ["citrus-slices.jpg", "honey-bee-on-aster.jpg", "suspension-bridge-night.jpg"],
        settings,
    )
    graph.register("alice")


def pipes_messages(graph, run_id):
    records = graph.instance.all_logs(run_id)
    return [r.user_message for r in records if (r.user_message or "").startswith("[pipes]")]


def test_lora_trains_in_a_pipes_process_passes_its_checks_and_caches(graph, subject):
    first = graph.materialize(CHAIN, "alice")
    meta = graph.metadata(first, "lora")
    assert meta["cache_hit"] is False and meta["steps"] == 6 and meta["device"] == "cpu"
    assert meta["loss_curve"].startswith("![training loss](data:image/jpeg;base64,")
    assert "epoch-0002-0.png" in meta["samples"]
    assert pipes_messages(graph, first.run_id)
    checks = {e.asset_check_key.name: e.passed for e in first.get_asset_check_evaluations()}
    assert checks == {
        "lora_keys_and_metadata": True,
        "lora_weights_finite": True,
        "lora_loads_in_diffusers": True,
    }
    lora_file = graph.layout.loras_dir("alice") / "alice.safetensors"
    version, modified = graph.data_version("lora", "alice"), lora_file.stat().st_mtime_ns

    again = graph.materialize(CHAIN, "alice")
    assert graph.metadata(again, "lora")["cache_hit"] is True
    assert pipes_messages(graph, again.run_id) == []  # no training process started
    assert graph.data_version("lora", "alice") == version and lora_file.stat().st_mtime_ns == modified

    forced = graph.defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=graph.instance,
        partition_key="alice",
        asset_selection=[dg.AssetKey("lora")],
        run_config={"ops": {"lora": {"config": {"force_retrain": True}}}},
    )
    assert graph.metadata(forced, "lora")["cache_hit"] is False and pipes_messages(graph, forced.run_id)


def test_training_settings_change_retrains_only_lora(graph, subject, tiny_sd):
    graph.observe()
    graph.materialize(CHAIN, "alice")
    settings = graph.layout.settings_file("alice")
    settings.write_text(settings.read_text().replace("network_dim = 4", "network_dim = 8"))
    graph.observe()
    assert [graph.stale_status(a, "alice") for a in ("dataset_zip", "lora")] == ["FRESH", "STALE"]
    meta = graph.metadata(graph.materialize("lora", "alice"), "lora")
    assert meta["cache_hit"] is False


def test_weekly_schedule_requests_every_subject(instance):
    instance.add_dynamic_partitions("subjects", ["alice", "bob"])
    tick = datetime.datetime(2026, 11, 29, 3, 0, tzinfo=datetime.UTC)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
    requests = weekly_retrain(context)
    assert sorted(r.partition_key for r in requests) == ["alice", "bob"]
    assert {r.run_key for r in requests} == {"alice:2026-11-29T03:00", "bob:2026-11-29T03:00"}
    assert weekly_retrain.job_name == "training_chain"
