"""Workflows over the layers below: the pipeline, its manifest, the paper's evaluation and offline mask generation."""
