"""A `ray start --head` node for end-to-end tests (the `mlflow server` fixture is in tests/conftest.py).

It runs as child processes of the test session, each in its own process group and temp dir,
on free ports; teardown kills exactly the processes it started (never a machine-wide
`ray stop`, which would also kill the session's own local Ray and anyone else's).

Ray 2.60 enables token authentication for local clusters. The head started here gets its own
token through the environment (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN=<random>``); the same
two variables authenticate ``ray job submit`` / ``ray job status`` (``ray_head["env"]``), and the
job driver inherits them from the head. ``~/.ray/auth_token`` is neither read nor written.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time

import pytest
from support_servers import BIN, free_port, remove_dir, stop_group, tail, wait_http


def _stop_jobs(address: str, token: str) -> None:
    try:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
        running = [j.submission_id for j in client.list_jobs() if j.submission_id and not j.status.is_terminal()]
        for sid in running:
            client.stop_job(sid)
        deadline = time.time() + 20
        while running and time.time() < deadline:
            running = [s for s in running if not client.get_job_status(s).is_terminal()]
            time.sleep(1)
    except Exception:  # noqa: BLE001 - best effort; the head is stopped next anyway
        pass


@pytest.fixture(scope="session")
def ray_head():
    """A separate Ray head (``ray start --head --block``) with a dashboard, its own temp dir,
    free ports and its own auth token. Yields ``{"address": http://127.0.0.1:<dashboard>,
    "env": environment for `ray job ...` commands, "temp_dir": ...}``."""
    d = tempfile.mkdtemp(prefix="brray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    token = secrets.token_hex(32)
    ports = {name: free_port() for name in ("gcs", "dashboard", "client", "agent_http", "agent_grpc", "runtime_env", "metrics")}
    env = {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # `--block` drains 30 s on SIGTERM otherwise
    }
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    cmd = [
        os.path.join(BIN, "ray"), "start", "--head", "--block",
        f"--port={ports['gcs']}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={ports['dashboard']}", "--include-dashboard=true",
        f"--ray-client-server-port={ports['client']}",
        f"--dashboard-agent-listen-port={ports['agent_http']}", f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env']}", f"--metrics-export-port={ports['metrics']}",
        "--num-cpus=4", f"--object-store-memory={400 * 1024 * 1024}",
        f"--temp-dir={d}", "--disable-usage-stats",
    ]
    log = open(os.path.join(d, "start.log"), "wb")
    proc = subprocess.Popen(cmd, cwd=d, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard']}"
    try:
        # every dashboard route (even /api/version) answers 401 without the token
        wait_http(f"{address}/api/version", 120, proc, headers={"Authorization": f"Bearer {token}"})
        wait_http(f"{address}/api/jobs/", 60, proc, headers={"Authorization": f"Bearer {token}"})
    except Exception as e:
        stop_group(proc, d)
        log.close()
        text = tail(os.path.join(d, "start.log"))
        remove_dir(d)
        raise RuntimeError(f"ray head did not start ({e}):\n{text}") from None
    try:
        yield {"address": address, "env": env, "temp_dir": d, "token": token}
    finally:
        _stop_jobs(address, token)  # drivers run in their own sessions; stop them through the API
        stop_group(proc, d)
        log.close()
        remove_dir(d)
