"""Scoring segmentations: the metric (numpy only) and the Cityscapes evaluation pass."""
