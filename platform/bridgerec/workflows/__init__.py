"""Workflows: the functions behind `jobs/*.py` and the `bridgerec` subcommands (compose the library)."""

from bridgerec.workflows.evaluate import evaluate_model, evaluate_run
from bridgerec.workflows.prepare import prepare
from bridgerec.workflows.train import quickstart, train_and_log

__all__ = ["evaluate_model", "evaluate_run", "prepare", "quickstart", "train_and_log"]
