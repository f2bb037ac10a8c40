"""Training library (no Dagster): base models, buckets, caches, the LoRA loop, kohya export."""
