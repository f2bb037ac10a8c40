"""Training as its own process: `python -m lora_assets.training.pipes_entry`.

Launched by Dagster's `PipesSubprocessClient` (the config arrives as a Pipes extra, logs and the
final materialization go back over Pipes), so a GPU run is isolated from the Dagster process and
a cluster Pipes client can run the very same entry point on a GPU node. Without Dagster,
`--config run.json` trains from a JSON file (benchmarks, debugging).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from lora_assets.digests import sha256_file, short_version
    from lora_assets.training.config import TrainConfig
    from lora_assets.training.trainer import train

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="train from this JSON file instead of Dagster Pipes")
    args = parser.parse_args(argv)
    if args.config:
        result = train(TrainConfig.from_dict(json.loads(args.config.read_text())))
        print(result.to_json())
        return 0

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        config = TrainConfig.from_dict(pipes.get_extra("config"))
        pipes.log.info(f"training {config.output_name} on {config.models.base_model} (pid {os.getpid()})")
        result = train(config, log=pipes.log.info)
        # The summary (steps, losses, samples) is in training_log.json, which the asset reads.
        pipes.report_asset_materialization(data_version=short_version(sha256_file(Path(result.output_file))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
