"""Real servers for tests: process helpers and an `mlflow server` (used by tests/conftest.py's
``mlflow_server`` fixture and by the e2e tests' Ray head).

Each server runs as a child process of the test session, in its own process group and temp dir,
on a free port; teardown kills exactly the processes it started (never a machine-wide
`ray stop`, which would also kill the session's own local Ray and anyone else's).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.path.dirname(sys.executable)  # the venv's bin: `mlflow`, `ray` and the job's `python`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, headers: dict | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - connection refused, 5xx while starting, ...
            last = e
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s (last error: {last})")


def _pids_under(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (our unique temp dir)."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.info["pid"] != os.getpid() and any(marker in a for a in (p.info["cmdline"] or [])):
                out.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def stop_group(proc: subprocess.Popen, marker: str | None = None, grace: float = 30) -> None:
    """Stop ``proc`` and everything it started: SIGTERM ``proc`` (it cleans up its children),
    then SIGTERM / SIGKILL whatever is left in its process group or names ``marker``."""
    import psutil

    def leftovers() -> set[int]:
        pids = set(_pids_under(marker)) if marker else set()
        pgid = proc.pid  # start_new_session=True: the group id is the leader's pid (and outlives it)
        pids |= {p.pid for p in psutil.process_iter() if group_of(p.pid) == pgid}
        pids.discard(os.getpid())
        return pids

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        pids = leftovers() | ({proc.pid} if proc.poll() is None else set())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + wait
        while time.time() < deadline and (proc.poll() is None or leftovers()):
            time.sleep(0.3)


def remove_dir(d: str) -> None:
    """rmtree, retried: a process that just died may still have been writing into ``d``."""
    for _ in range(5):
        shutil.rmtree(d, ignore_errors=True)
        if not os.path.exists(d):
            return
        time.sleep(1)


def tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()[-n:]
    except OSError as e:
        return str(e)


def group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


@contextlib.contextmanager
def mlflow_server():
    """`mlflow server` on a free port with a SQLite store and proxied artifacts.

    Artifacts go through the server (``--artifacts-destination``; new experiments get
    ``mlflow-artifacts:/`` roots), so a client needs nothing but the http URI. Yields the URI.
    """
    d = tempfile.mkdtemp(prefix="brmlf-")
    port = free_port()
    log = open(os.path.join(d, "server.log"), "wb")
    cmd = [
        os.path.join(BIN, "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{d}/m.db",
        "--artifacts-destination", f"{d}/art",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(cmd, cwd=d, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", 300, proc)  # ~10 s on a quiet machine; minutes under heavy load
    except Exception as e:
        stop_group(proc, d)
        log.close()
        text = tail(os.path.join(d, "server.log"))
        remove_dir(d)
        raise RuntimeError(f"mlflow server did not start ({e}):\n{text}") from None
    try:
        yield uri
    finally:
        stop_group(proc, d)
        log.close()
        remove_dir(d)
