"""Metrics, plots and embeddings: functions of predictions and models, written where the caller says."""
