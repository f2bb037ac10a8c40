"""Turn folders of photos into Stable Diffusion LoRAs with a cached, partitioned Dagster asset graph."""

__version__ = "0.1.0"
