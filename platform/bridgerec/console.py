"""What a user sees: one line per phase, a live bar per long phase, and the full log in a file.

Every ``bridgerec`` command calls :func:`start` first. From then on:

- bridgerec's own lines (``[data] ...``, ``[train] ...``) go to stdout through the ``bridgerec``
  logger (:func:`say`);
- the libraries' loggers (Ray, Ray Data, MLflow, DeepSpeed, vLLM, transformers) and Python
  warnings go to the run's log file only, except errors; Ray workers' and actors' output stays in
  Ray's session logs (``ray.init(log_to_driver=False)``);
- with ``-v``/``--verbose`` or ``BRIDGEREC_VERBOSE=1`` the libraries' INFO lines and every Ray
  worker's output (``log_to_driver=True``) come back on the console;
- everything bridgerec and the libraries log in this process is written to
  ``<work_dir>/logs/<command>-<time>.log``, whose path is printed.

Long phases render a ``tqdm`` bar when stdout is a terminal (:class:`EpochBar`,
:func:`progress`); otherwise they print one line per epoch (or nothing per batch), so CI logs
and ``ray job logs`` stay readable. This is a leaf module: it imports nothing from bridgerec.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional

__all__ = ["start", "stop", "say", "result", "record_exception", "detail", "verbose", "log_path", "quiet_libraries", "EpochBar", "progress",
           "epoch_line", "VERBOSE_ENV"]

LOGGER = logging.getLogger("bridgerec")
VERBOSE_ENV = "BRIDGEREC_VERBOSE"
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "mlflow", "alembic", "DeepSpeed",
                   "deepspeed", "vllm", "transformers", "py.warnings")
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_state: dict[str, Any] = {"verbose": False, "path": None, "file": None, "console": None, "forward": None}


def _env_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def verbose() -> bool:
    """True after ``start(verbose=True)`` or with ``BRIDGEREC_VERBOSE`` set to 1/true/yes."""
    return bool(_state["verbose"]) or _env_verbose()


def log_path() -> Optional[str]:
    """The current command's log file (None before :func:`start`)."""
    return _state["path"]


def say(message: str) -> None:
    """One of bridgerec's own progress lines: stdout and the log file."""
    LOGGER.info(message)


def result(text: str) -> None:
    """A results block (tables, run ids): always printed to stdout, also without :func:`start`,
    and copied into the log file."""
    print(text, flush=True)
    _to_file(logging.INFO, text)


def record_exception(message: str) -> None:
    """The exception being handled, with its traceback, into the log file only (the console
    gets Python's own traceback)."""
    _to_file(logging.ERROR, message, sys.exc_info())


def _to_file(level: int, message: str, exc_info: Any = None) -> None:
    """A record straight into the log file, past the console handler."""
    if _state["file"] is not None:
        _state["file"].handle(LOGGER.makeRecord(LOGGER.name, level, __file__, 0, message, None, exc_info))


def detail(message: str) -> None:
    """A line for the log file (and the console with ``--verbose``)."""
    LOGGER.debug(message)


class _ConsoleHandler(logging.Handler):
    """Writes through ``tqdm.write`` so a live bar is not torn by a line, to the stdout of the
    moment (pytest's capture replaces it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class _Forward(logging.Handler):
    """Hands a non-propagating library logger's records (INFO and up) to the log file. A handler of
    its own, so that a library re-formatting its loggers' handlers (``ray.init`` does) leaves the
    file's format alone."""

    def __init__(self, target: logging.Handler):
        super().__init__(logging.INFO)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


class _ConsoleFilter(logging.Filter):
    """bridgerec's INFO lines (DEBUG too with --verbose); other loggers' errors only, or their
    INFO lines with --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "bridgerec" or record.name.startswith("bridgerec.")
        if verbose():
            return record.levelno >= (logging.DEBUG if ours else logging.INFO)
        return record.levelno >= (logging.INFO if ours else logging.ERROR)


def start(command: str, work_dir: str, verbose: bool = False) -> str:
    """Configure the console and open ``<work_dir>/logs/<command>-<time>-<pid>.log``; returns its
    path. A second call (another command in the same process) replaces the handlers; :func:`stop`
    removes them."""
    stop()
    _state["verbose"] = verbose or _env_verbose()
    logs = os.path.join(os.path.abspath(work_dir), "logs")
    os.makedirs(logs, exist_ok=True)
    path = os.path.join(logs, f"{command.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    root = logging.getLogger()
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setLevel(logging.DEBUG)
    file_handler.setFormatter(logging.Formatter(_FILE_FORMAT))
    console = _ConsoleHandler()
    console.addFilter(_ConsoleFilter())
    console.setFormatter(logging.Formatter("%(message)s"))
    _state.update(path=path, file=file_handler, console=console, forward=_Forward(file_handler))
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    LOGGER.setLevel(logging.DEBUG)
    logging.captureWarnings(True)
    # MLflow configures its own stderr handler at import unless told not to; its records then
    # reach the handlers above. Its artifact-download bars are off unless --verbose.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    if not _state["verbose"]:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_libraries()
    detail(f"bridgerec {command}: argv {sys.argv!r}; cwd {os.getcwd()}")
    return path


def stop() -> None:
    """Remove the handlers :func:`start` installed and close the log file (the path stays known)."""
    for key in ("file", "console"):  # on the root logger
        if _state[key] is not None:
            logging.getLogger().removeHandler(_state[key])
            _state[key].close()
    if _state["forward"] is not None:  # on the non-propagating library loggers (quiet_libraries)
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).removeHandler(_state["forward"])
    _state.update(file=None, console=None, forward=None)
    _state["verbose"] = False
    logging.captureWarnings(False)


def _reclaim_root() -> None:
    """Our handlers back on the root logger, without Ray's: importing ``ray.serve.llm`` runs a
    logging dictConfig that replaces the root's handlers with Ray's JSON handler on stderr."""
    root = logging.getLogger()
    ours = [h for h in (_state["file"], _state["console"]) if h is not None]
    for h in list(root.handlers):
        if h not in ours and type(h.formatter).__module__.startswith("ray."):
            root.removeHandler(h)
    for h in ours:
        if h not in root.handlers:
            root.addHandler(h)


def quiet_libraries() -> None:
    """Route the libraries' own console handlers: their console handlers print errors only
    (everything with --verbose), and the log file gets every record of loggers that do not
    propagate to the root. Call again after a library configures its logging (``ray.init``,
    ``import ray.data``)."""
    forward = _state["forward"]
    if forward is None:
        return
    _reclaim_root()
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for h in logger.handlers:
            if not isinstance(h, logging.FileHandler) and isinstance(h, logging.StreamHandler):
                h.setLevel(logging.INFO if _state["verbose"] else logging.ERROR)
        if not logger.propagate and forward not in logger.handlers:
            logger.addHandler(forward)


def _width(stream: Any) -> dict:
    """tqdm's size options: follow the terminal, or 100 x 20 where it reports no size (a pty
    nobody sized, as under ``script``; tqdm draws nothing at 0 rows)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return {"ncols": 100, "nrows": 20}
    return ({"dynamic_ncols": True} if size.columns > 0 else {"ncols": 100}) | ({} if size.lines > 0 else {"nrows": 20})


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def epoch_line(event: dict) -> str:
    """``[train] epoch 3/20 loss 0.6682 valid_recall_at_20 0.0228 181253 samples/s ETA 12s``."""
    tail = " (early stop)" if event.get("stop") else f" ETA {event.get('eta_s', 0):.0f}s"
    return (f"[train] epoch {event['epoch']}/{event['epochs']} loss {event['loss']:.4f} "
            f"{event['metric']} {event['value']:.4f} {event['samples_per_s']:.0f} samples/s{tail}")


def step_line(event: dict) -> str:
    return (f"[train] epoch {event['epoch']}/{event['epochs']} step {event['step']}/{event['steps']} "
            f"loss {event['loss']:.4f} {event['samples_per_s']:.0f} samples/s ETA {event.get('eta_s', 0):.0f}s")


class EpochBar:
    """The training phase on the driver: a tqdm bar over epochs (loss, validation metric,
    samples/s, ETA) on a terminal, else one line per epoch. Fed by the events rank 0 sends
    (``{"kind": "epoch" | "step" | "message", ...}``); every event is also in the log file."""

    def __init__(self, epochs: int, stream: Any = None):
        self.stream = stream or sys.stdout
        self.bar = None
        if _isatty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, unit="epoch", desc="[train]", file=self.stream, leave=True, **_width(self.stream))

    def handle(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "message":
            say(event["text"])
        elif kind == "step":
            if self.bar is not None:
                self.bar.set_postfix_str(f"step {event['step']}/{event['steps']} loss {event['loss']:.4f}")
            detail(step_line(event))
        elif kind == "epoch":
            if self.bar is None:
                say(epoch_line(event))
                return
            if event["epoch"] - 1 > self.bar.n:  # resumed from a checkpoint
                self.bar.update(event["epoch"] - 1 - self.bar.n)
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss {event['loss']:.4f} {event['metric']} {event['value']:.4f} "
                                     f"{event['samples_per_s']:.0f} samples/s" + (" early stop" if event.get("stop") else ""))
            detail(epoch_line(event))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress(items: Iterable, total: Optional[int], desc: str, unit: str = "batch") -> Iterator:
    """``items`` with a tqdm bar on a terminal (nothing extra elsewhere)."""
    if not _isatty(sys.stdout) or (total is not None and total <= 1):
        yield from items
        return
    from tqdm import tqdm

    with tqdm(items, total=total, desc=desc, unit=unit, file=sys.stdout, leave=False, **_width(sys.stdout)) as bar:
        yield from bar
