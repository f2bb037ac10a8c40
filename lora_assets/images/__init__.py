"""Image work with no Dagster import: decoding, measurements, perceptual hashes, quality, grouping."""
