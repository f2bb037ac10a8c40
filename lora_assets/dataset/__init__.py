"""The training set as people exchange it: a Kohya DreamBooth zip (no Dagster)."""
