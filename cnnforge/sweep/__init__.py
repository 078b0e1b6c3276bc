"""Ray Tune sweeps of a recipe's ``tune:`` section: the driver, one trial, and the results table."""
from cnnforge.sweep.driver import TuneResult, tune

__all__ = ["TuneResult", "tune"]
