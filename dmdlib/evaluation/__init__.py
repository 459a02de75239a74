"""Measurement: FID, KID, precision/recall and class shares in a feature space, speed and memory, the teacher and
generator rows of the `evaluate` stage (image and text-to-image), and what distillation watches while it trains."""
