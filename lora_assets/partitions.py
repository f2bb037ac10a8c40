"""The one partitioning of the project: one partition per subject."""

import dagster as dg

SUBJECTS_PARTITION = "subjects"
subjects_partitions = dg.DynamicPartitionsDefinition(name=SUBJECTS_PARTITION)
