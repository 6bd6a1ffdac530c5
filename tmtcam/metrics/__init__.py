"""Metrics: segmentation IoU tables and interpretability (trait localisation, insertion/deletion)."""
