"""Used by .ci/cli_double_run.sh: read the instance at $DAGSTER_HOME and assert that the latest run
of a subject's whole graph did no work: every asset materialized, no file decoded, no feature,
caption or latent computed, the LoRA a cache hit, and no `[pipes]` message (no training process)."""

import sys

import dagster as dg

EXPECTED = ["raw_images", "deduped_images", "filtered_images", "captions", "dataset_zip", "lora"]
NO_WORK = {
    "raw_images": {"files_decoded": 0},
    "deduped_images": {"features_computed": 0, "details_computed": 0},
    "filtered_images": {"details_computed": 0},
    "captions": {"generated": 0},
    "lora": {"cache_hit": True},
}


def pipes_messages(logs: list) -> list[str]:
    return [r.user_message for r in logs if (r.user_message or "").startswith("[pipes]")]


def main(subject: str) -> None:
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records(limit=2)
        assert len(runs) == 2, f"expected the cold and the warm run, found {len(runs)}"
        warm, cold = runs[0].dagster_run, runs[1].dagster_run
        for run in (cold, warm):
            assert run.status == dg.DagsterRunStatus.SUCCESS, f"run {run.run_id} {run.status}"
        logs = instance.all_logs(warm.run_id)
        events = [r.asset_materialization for r in logs if r.asset_materialization]
        materialized = {m.asset_key.to_user_string(): m for m in events if m.partition == subject}
        assert sorted(materialized) == sorted(EXPECTED), sorted(materialized)
        for asset, expected in NO_WORK.items():
            metadata = materialized[asset].metadata
            for key, value in expected.items():
                actual = getattr(metadata[key], "value", metadata[key])
                assert actual == value, f"{asset}.{key} = {actual!r} on the warm run, expected {value!r}"
        pipes = pipes_messages(logs)
        assert not pipes, f"the warm run started a training process: {pipes[:3]}"
        assert pipes_messages(instance.all_logs(cold.run_id)), "the cold run should have trained via Pipes"
        print(f"warm run {warm.run_id[:8]}: {len(materialized)} assets, all cache hits, no training process")


if __name__ == "__main__":
    main(sys.argv[1])
