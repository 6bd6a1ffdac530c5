"""End-to-end pipelines behind `make train-tmt` / `make train-promptcam` (embedded synthetic data)."""
