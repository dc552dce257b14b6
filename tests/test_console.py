"""What a user sees: bridgerec's lines on stdout, libraries' logs in the run's log file only
(unless --verbose), one line per epoch off a terminal and a live bar on one."""

from __future__ import annotations

import io
import logging
import warnings

import pytest

from bridgerec import console


@pytest.fixture
def session(tmp_path, monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    yield tmp_path
    console.stop()


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_quiet_by_default_and_everything_in_the_log_file(session, capsys):
    path = console.start("train", str(session))
    assert path.startswith(str(session / "logs" / "train-")) and path.endswith(".log")
    console.say("[data] 10 users")
    console.detail("[data] pass 1")
    logging.getLogger("somelib.data").info("Starting execution of Dataset x")
    logging.getLogger("otherlib.store").info("Creating initial MLflow database tables")
    logging.getLogger("somelib").error("a worker died")
    warnings.warn("ExecutionOptions.exclude_resources is deprecated", DeprecationWarning)
    console.stop()
    out = capsys.readouterr().out
    assert out.splitlines() == ["[data] 10 users", "a worker died"]  # errors of libraries still show
    log = _read(path)
    for text in ("[data] 10 users", "[data] pass 1", "Starting execution of Dataset x",
                 "Creating initial MLflow database tables", "a worker died", "exclude_resources is deprecated"):
        assert text in log, text


def test_verbose_flag_and_env_bring_library_logs_back(session, capsys, monkeypatch):
    console.start("train", str(session), verbose=True)
    logging.getLogger("somelib.data").info("Starting execution of Dataset y")
    console.detail("[data] pass 1")
    console.stop()
    assert capsys.readouterr().out.splitlines()[-2:] == ["Starting execution of Dataset y", "[data] pass 1"]
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    console.start("train", str(session))
    assert console.verbose()
    logging.getLogger("otherlib").info("tables created")
    console.stop()
    assert "tables created" in capsys.readouterr().out


def test_a_library_handler_printing_to_the_console_is_routed(session, capsys):
    """Loggers that own a stream handler and do not propagate (Ray's, Ray Data's) print errors
    only, and their records still reach the file."""
    lib = logging.getLogger("ray.train")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    lib.addHandler(handler)
    lib.propagate = False
    try:
        path = console.start("train", str(session))
        lib.warning("Failed to query Ray Train Controller actor state")
        console.stop()
        assert stream.getvalue() == "" and "Failed to query Ray Train Controller" in _read(path)
    finally:
        lib.removeHandler(handler)
        lib.propagate = True


def _epoch(n: int, stop: bool = False) -> dict:
    return {"kind": "epoch", "epoch": n, "epochs": 3, "loss": 0.5, "metric": "valid_recall_at_20",
            "value": 0.1 * n, "samples_per_s": 1000.0, "eta_s": 3.0, "stop": stop}


def test_epoch_bar_off_a_terminal_prints_one_line_per_epoch(session, capsys):
    path = console.start("train", str(session))
    bar = console.EpochBar(3, stream=io.StringIO())  # not a TTY
    bar.handle({"kind": "message", "text": "[train] 2 worker(s)"})
    bar.handle({"kind": "step", "epoch": 1, "epochs": 3, "step": 5, "steps": 10, "loss": 0.6, "samples_per_s": 9.0, "eta_s": 1})
    for n in (1, 2):
        bar.handle(_epoch(n))
    bar.handle(_epoch(3, stop=True))
    bar.close()
    console.stop()
    assert capsys.readouterr().out.splitlines() == [
        "[train] 2 worker(s)",
        "[train] epoch 1/3 loss 0.5000 valid_recall_at_20 0.1000 1000 samples/s ETA 3s",
        "[train] epoch 2/3 loss 0.5000 valid_recall_at_20 0.2000 1000 samples/s ETA 3s",
        "[train] epoch 3/3 loss 0.5000 valid_recall_at_20 0.3000 1000 samples/s (early stop)",
    ]
    assert "step 5/10" in _read(path)  # step lines go to the file only


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_epoch_bar_on_a_terminal_is_one_live_bar(session, capsys):
    path = console.start("train", str(session))
    tty = _Tty()
    bar = console.EpochBar(3, stream=tty)
    for n in (1, 2, 3):
        bar.handle(_epoch(n))
    bar.close()
    console.stop()
    screen = tty.getvalue()
    assert "3/3" in screen and "valid_recall_at_20 0.3000" in screen and "epoch" in screen
    assert "[train] epoch" not in capsys.readouterr().out  # the bar replaces the lines on stdout
    assert _read(path).count("[train] epoch ") == 3  # and the file keeps one line per epoch


def test_results_print_without_a_session_and_copy_into_the_log(session, capsys):
    console.result("table A")
    path = console.start("evaluate", str(session))
    console.result("table B")
    console.stop()
    assert capsys.readouterr().out.splitlines() == ["table A", "table B"]
    assert "table B" in _read(path) and "table A" not in _read(path)


def test_console_survives_ray_serve_llm_import(tmp_path, capsys):
    """Importing ray.serve.llm replaces the root logger's handlers with Ray's JSON one; the next
    quiet_libraries puts ours back, so phase lines stay plain."""
    import logging

    from bridgerec import console

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    console.start("t", str(tmp_path))
    try:
        # what `import ray.serve.llm` runs (once per process, so call it directly)
        from ray.llm._internal.serve.observability.logging.setup import setup_logging

        setup_logging()
        console.quiet_libraries()
        assert not [h for h in root.handlers if type(h.formatter).__module__.startswith("ray.")]
        console.say("[x] plain line")
        assert "[x] plain line\n" in capsys.readouterr().out
    finally:
        console.stop()
        root.handlers[:] = saved[0]  # pytest's own capture handlers, which Ray's setup dropped
        root.setLevel(saved[1])
