"""Metrics, plots and embeddings written into run directories."""
