"""The Accelerate trainer: set-up, the loop, checkpoints and run directories."""
