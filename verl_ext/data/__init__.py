"""Datasets that verl-ext generates locally (no hub downloads), written in verl's parquet format."""
