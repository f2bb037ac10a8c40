"""Training as its own process: `python -m lora_assets.training.pipes_entry`.

Launched by Dagster's `PipesSubprocessClient` (the config arrives as a Pipes extra, logs and the
final materialization go back over Pipes), so a GPU run is isolated from the Dagster process and
a cluster Pipes client can run the very same entry point on a GPU node. When the launcher put
the Pipes context in S3 (no shared disk), it is read from there and messages go back there. On a
URL data root the process pulls its inputs (the zip, its checkpoints, the latent caches) into
its own mirror, publishes each checkpoint as it is saved (so a retry elsewhere resumes), and
publishes the LoRA at the end. Without Dagster, `--config run.json` trains from a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lora_assets.training.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    from lora_assets.digests import sha256_file, short_version
    from lora_assets.training.config import TrainConfig
    from lora_assets.training.trainer import train

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="train from this JSON file instead of Dagster Pipes")
    args = parser.parse_args(argv)
    if args.config:
        with synced(TrainConfig.from_dict(json.loads(args.config.read_text()))) as (config, publish):
            result = train(config, on_checkpoint=publish)
        print(result.to_json())
        return 0

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes(**pipes_channels()) as pipes:
        config = TrainConfig.from_dict(pipes.get_extra("config"))
        pipes.log.info(f"training {config.output_name} on {config.models.base_model} (pid {os.getpid()})")
        with synced(config, pipes.log.info) as (config, publish):
            result = train(config, log=pipes.log.info, on_checkpoint=publish)
        # The summary (steps, losses, samples) is in training_log.json, which the asset reads.
        pipes.report_asset_materialization(data_version=short_version(sha256_file(Path(result.output_file))))
    return 0


def pipes_channels() -> dict[str, Any]:
    """S3 context loader and message writer when the launcher used S3 (its params name a
    bucket), else Pipes' defaults (files, for a subprocess on the same machine)."""
    from dagster_pipes import PipesEnvVarParamsLoader, PipesS3ContextLoader, PipesS3MessageWriter

    if "bucket" not in PipesEnvVarParamsLoader().load_context_params():
        return {}
    import boto3

    client = boto3.client("s3")  # endpoint and credentials from the environment
    return {
        "context_loader": PipesS3ContextLoader(client),
        "message_writer": PipesS3MessageWriter(client, interval=1.0),
    }


@contextlib.contextmanager
def synced(
    config: TrainConfig, log: Callable[[str], None] = print
) -> Iterator[tuple[TrainConfig, Callable[[Path], None] | None]]:
    """`config` with its files in place: as it is on a local root; on a URL root pulled into this
    machine's mirror, with a callback publishing each checkpoint, and the outputs published after."""
    if config.sync is None:
        yield config, None
        return
    from lora_assets.layout import DataLayout, TrainingWork
    from lora_assets.remote import RemoteRoot

    remote = RemoteRoot(config.sync.data_root)
    files = DataLayout(remote.mirror).subject(config.sync.subject)
    local = config.model_copy(
        update={
            "dataset_zip": str(files.dataset_zip),
            "work_dir": str(files.training_work),
            "output_file": str(files.lora_file),
            "log_file": str(files.training_log),
            "samples_dir": str(files.samples),
            "diffusers_dir": str(files.diffusers_copy),
        }
    )
    reads, writes = TrainingWork(files.training_work).synced(config.training_key, files)
    fetched = remote.pull([remote.relative(p) for p in reads])
    log(f"pulled {fetched / 1e6:.1f} MB from {remote.url}")

    def publish(run_folder: Path) -> None:
        remote.push([remote.relative(run_folder)])

    yield local, publish
    sent = remote.push([remote.relative(p) for p in writes])
    log(f"published {sent / 1e6:.1f} MB to {remote.url}")


if __name__ == "__main__":
    sys.exit(main())
