"""Captioners (BLIP, template) and caption text handling (no Dagster)."""
