"""Training: compile defaults (loss, metrics, schedule), run configuration, callbacks, the trainer."""
