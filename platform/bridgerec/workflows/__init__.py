"""Workflows: the functions behind `jobs/*.py` and the `bridgerec` subcommands (compose the library)."""

from bridgerec.workflows.evaluate import evaluate_and_report, evaluate_model, evaluate_run
from bridgerec.workflows.prepare import prepare
from bridgerec.workflows.train import print_summary, quickstart, train_and_log

__all__ = ["evaluate_and_report", "evaluate_model", "evaluate_run", "prepare", "print_summary", "quickstart", "train_and_log"]
