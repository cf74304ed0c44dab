"""Child processes of a benchmark run: each in its own session, all stopped on exit."""

import atexit
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

_live: set[subprocess.Popen[bytes]] = set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    command: list[str],
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` in a new session (so stopping it takes its children along); its output
    goes to `log_path`, or to pipes when there is none. `env` adds to this environment;
    `cpus` confines it (and every thread it starts) to those CPUs."""
    environment = {**os.environ, **env} if env else None
    confine = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    if log_path is None:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=environment,
            preexec_fn=confine,  # noqa: PLW1509 - only sets the CPU mask before exec
        )
    else:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
                preexec_fn=confine,  # noqa: PLW1509 - only sets the CPU mask before exec
            )
    _live.add(process)
    return process


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process's session group, SIGKILL it if still there after `grace` seconds."""
    _live.discard(process)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # start_new_session: its group id is its pid
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


@atexit.register
def stop_all() -> None:
    for process in list(_live):
        stop(process)


def run(command: list[str], timeout: float, cpus: set[int] | None = None) -> str:
    """Run `command` to completion (killed after `timeout` seconds); its stdout."""
    process = spawn(command, cpus=cpus)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        stop(process)
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {process.returncode}:\n{stderr.decode()[-2000:]}"
        )
    return stdout.decode()


def wait_ready(
    name: str, process: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float
) -> None:
    """Poll GET /readyz until it answers 200; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited {process.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(OSError):  # not listening yet
            if http_status(port, "GET", "/readyz") == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{_tail(log_path)}")


def http_status(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-2000:]
