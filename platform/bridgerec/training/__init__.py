"""Ray Train loop shared by every domain model and method, and the driver that runs it."""

from bridgerec.training.driver import TrainResult, train

__all__ = ["TrainResult", "train"]
