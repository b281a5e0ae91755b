"""The Flower ServerApp: strategy, validation, run store, checkpoints (lands with the federation issue)."""
