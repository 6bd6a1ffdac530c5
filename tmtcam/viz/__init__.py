"""Visualisation: overlays, heatmap grids, and image logging to W&B or PNG files."""
