"""Ray Train loop shared by every domain model and method, and the driver that runs it."""

from bridgerec.training.driver import TrainResult, check_plugins, train

__all__ = ["TrainResult", "check_plugins", "train"]
