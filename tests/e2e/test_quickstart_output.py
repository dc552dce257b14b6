"""The quickstart as a newcomer runs it: a fresh process started from a directory that is not
the repository, on a terminal (a pseudo-terminal: one live bar for the epochs). Checks the line
budget, that the bar replaces per-epoch lines, and that Ray's and MLflow's internals stay in the
log file. Piped output (one line per epoch, each reported once) is checked on a submitted job's
logs (``test_job_submit.py``), which is the same code path off a terminal."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

BRIDGEREC = os.path.join(os.path.dirname(sys.executable), "bridgerec")
LINE_BUDGET = 40  # 30 for the training part; the served demo request adds its answer (5 items) and the curl
EPOCHS = 3
NOISE = ("Starting execution", "Execution plan", "(RayTrainWorker", "(TrainController", "(SplitCoordinator",
         "PlacementGroupCleaner", "Downloading artifacts", "RayDeprecationWarning", "PreemptionWatcher",
         "Traceback", "mlflow.store.db")
ARGS = ["quickstart", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny", "data.preprocess.kcore_user=3",
        "data.preprocess.kcore_item=3", "model.dim=16", f"train.epochs={EPOCHS}", "train.batch_size=128", "train.patience=0"]


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "BRIDGEREC_VERBOSE")}


def _run_on_a_terminal(cmd: list[str], cwd, timeout: float) -> tuple[int, str]:
    """Run ``cmd`` with stdin/stdout/stderr on a 120x40 pseudo-terminal; returns (rc, output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait(timeout=30)
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def _screen(output: str) -> list[str]:
    """The lines a terminal ends up showing: a carriage return redraws the line it is on."""
    return [line.split("\r")[-1] for line in output.replace("\r\n", "\n").split("\n")]


@pytest.fixture(scope="module")
def on_a_terminal(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("newcomer")
    rc, out = _run_on_a_terminal([BRIDGEREC, *ARGS], cwd, 600)
    return cwd, rc, out


@pytest.mark.slow
def test_on_a_terminal_the_quickstart_fits_the_line_budget_with_one_bar(on_a_terminal):
    _, rc, out = on_a_terminal
    assert rc == 0, out[-4000:]
    lines = [ln for ln in _screen(out) if ln.strip()]
    assert len(lines) <= LINE_BUDGET, f"{len(lines)} lines:\n" + "\n".join(lines)
    assert re.search(rf"\[train\]: 100%\|.*\| {EPOCHS}/{EPOCHS} .*valid_recall_at_20", out), out[-3000:]
    assert not any(ln.startswith("[train] epoch ") for ln in lines)  # the bar, not one line per epoch
    for noise in NOISE:
        assert noise not in out, noise
    assert any(re.match(r"mf\s+0\.\d{4}", ln) for ln in lines) and any(ln.startswith("popularity") for ln in lines)
    assert "MLflow run: " in out and "open the MLflow UI: mlflow ui" in out
    # registration adds a version with no alias; the quickstart's guarded promote makes the first one @champion
    assert "[promote] promoted: models:/bridgerec-quickstart/1 -> @champion: no @champion yet" in out, out[-3000:]


@pytest.mark.slow
def test_the_full_log_is_written_under_work_dir(on_a_terminal):
    """Off the console, in the file: Ray Data's lines and one line per epoch (piped output, one
    line per epoch reported once, is checked on a submitted job's logs in test_job_submit.py)."""
    cwd, _, out = on_a_terminal
    printed = re.search(r"full log: (\S+\.log)", out)
    assert printed, out[-3000:]
    path = printed.group(1)
    assert path.startswith(str(cwd / "bridgerec_work" / "logs")) and os.path.exists(path)
    with open(path) as fh:
        log = fh.read()
    assert "Starting execution of Dataset" in log  # Ray Data's lines live here
    for k in range(1, EPOCHS + 1):
        assert log.count(f"[train] epoch {k}/{EPOCHS} ") == 1, k
    assert "recall@20" in log
