"""Training as its own process: `python -m lora_assets.training.pipes_entry`.

Launched by Dagster's `PipesSubprocessClient` (the config arrives as a Pipes extra, logs and the
final materialization go back over Pipes), so a GPU run is isolated from the Dagster process and
a cluster Pipes client can run the very same entry point on a GPU node. Without Dagster,
`--config run.json` trains from a JSON file (benchmarks, debugging).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
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
        pipes.log.info(f"training {config.output_name} on {config.base_model} (pid {os.getpid()})")
        result = train(config, log=pipes.log.info)
        output = Path(result.output_file)
        pipes.report_asset_materialization(
            metadata={
                "path": {"raw_value": str(output), "type": "path"},
                "size_bytes": {"raw_value": output.stat().st_size, "type": "int"},
                "steps": {"raw_value": result.steps, "type": "int"},
                "seconds": {"raw_value": result.seconds, "type": "float"},
                "images_per_second": {"raw_value": result.images_per_second, "type": "float"},
                "peak_memory_mb": {"raw_value": round(result.peak_memory_bytes / 2**20, 1), "type": "float"},
                "final_loss": {"raw_value": result.final_loss, "type": "float"},
                "device": {"raw_value": result.device, "type": "text"},
                "latents_encoded": {"raw_value": result.latents_encoded, "type": "int"},
                "latents_cached": {"raw_value": result.latents_cached, "type": "int"},
                "resumed_from_epoch": {"raw_value": result.resumed_from_epoch, "type": "int"},
            },
            data_version=_file_digest(output)[:24],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
