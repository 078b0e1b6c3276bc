"""The Accelerate trainer: its parts, the loop, progress, tracking and the run's report."""
