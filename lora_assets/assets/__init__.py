"""Thin Dagster assets: read settings, call the library, write files, return metadata."""
