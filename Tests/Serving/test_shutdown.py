"""SIGTERM while a run is in flight: the server exits (status 0, within 15 s), the client gets an error or a finished
reply (never a hang), and no sandbox process is left behind."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import MODEL, STOP_TIMEOUT, FakeModel, Keys, process_tree


def cgroup_members(prefix: str) -> list[int]:
    """Pids whose cgroup path has a group named `prefix`… (Sources/RLMTesting/SandboxLeftovers.swift)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/cgroup").read_text()
            except OSError:
                continue
            if "/" + prefix in text:
                found.append(int(entry))
    return found


def cgroup_directories(prefix: str) -> list[str]:
    found = []
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if not os.path.isdir(base):
            continue
        for directory, subdirs, _ in os.walk(base):
            if directory[len(base):].count("/") > 8:
                subdirs[:] = []
                continue
            found += [os.path.join(directory, d) for d in subdirs if d.startswith(prefix)]
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def sandbox_processes(pids) -> list[int]:
    """bubblewrap of our sandboxes, the launcher, and the worker."""
    return [pid for pid in pids
            if b"\0--hostname\0rlm-sandbox\0" in command_line(pid) or b"rlm-sandbox-launch" in command_line(pid)]


def leftovers(server_pid: int, descendants: set[int]) -> list[str]:
    left = [f"pid {pid} in a cgroup of server {server_pid}" for pid in cgroup_members(f"swiftrlm-{server_pid}-")]
    left += [f"cgroup {d}" for d in cgroup_directories(f"swiftrlm-{server_pid}")
             if os.path.basename(d) == f"swiftrlm-{server_pid}" or os.path.basename(d).startswith(f"swiftrlm-{server_pid}-")]
    left += [f"pid {pid} ({command_line(pid)[:80]!r}) the server started is still alive"
             for pid in descendants - {server_pid} if alive(pid)]
    return left


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}", pytrace=False)


@pytest.mark.parametrize("busy", ["model", "sandbox"])
def test_sigterm_during_a_run(busy, start_server, rlm_bin, rlm_env):
    """`model`: the model is slow to reply (3 s a reply); `sandbox`: a cell sleeps 50 s in the sandbox."""
    model = FakeModel(delay=3.0 if busy == "model" else 0.0)
    server = None
    try:
        server = start_server(model=model)
        key = Keys(rlm_bin, server.store, rlm_env).create("shutdown", rpm=1000)
        outcome = {}

        def client():
            question = "count:ERROR" if busy == "model" else "sleep:50"
            try:
                with server.http(key, timeout=120) as http:
                    response = http.post("/v1/chat/completions", json={
                        "model": MODEL, "messages": [{"role": "user", "content": question}]})
                    outcome["status"] = response.status_code
                    outcome["body"] = response.text
            except httpx.HTTPError as error:
                outcome["error"] = repr(error)

        thread = threading.Thread(target=client)
        thread.start()
        if busy == "model":
            wait_for(lambda: model.stats()["in_flight"] >= 1, 60, "the run's first model call")
        else:
            wait_for(lambda: model.stats()["served"] >= 1, 60, "the run's first model reply")
            time.sleep(1.0)  # the cell is sleeping now
        descendants = process_tree(server.pid)
        assert sandbox_processes(descendants), f"no sandbox under the server: {sorted(descendants)}"

        began = time.monotonic()
        status = server.terminate()
        took = time.monotonic() - began
        assert status is not None, f"rlm serve did not exit within {STOP_TIMEOUT} s of SIGTERM:\n{server.stderr()}"
        assert status == 0, f"rlm serve exited with {status}:\n{server.stderr()}"

        thread.join(30)
        assert not thread.is_alive(), "the client still waits after the server exited"
        if "status" in outcome:
            # A finished reply, or an error in OpenAI's shape; never a half-open hang.
            assert outcome["status"] in (200, 500, 502, 503), outcome
            assert "/work" not in outcome["body"] and ".swift" not in outcome["body"], outcome["body"][:500]
        else:
            assert "error" in outcome

        left = []
        deadline = time.time() + 5
        while time.time() < deadline:
            left = leftovers(server.pid, descendants)
            if not left:
                break
            time.sleep(0.1)
        assert not left, left
        print(f"SIGTERM with the {busy} busy: exited in {took:.2f} s; client: {outcome.get('status', outcome.get('error'))}")
    finally:
        if server is not None and not server.stopped:
            server.terminate()  # a failure above: do not leave it to the session's teardown
        model.stop()


def test_readyz_is_ready_then_the_server_stops_cleanly_when_idle(start_server):
    server = start_server()
    assert httpx.get(server.url + "/readyz", timeout=30).json()["status"] == "ready"
    began = time.monotonic()
    assert server.terminate() == 0, server.stderr()
    assert time.monotonic() - began < 5, "an idle server took long to stop"
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url + "/healthz", timeout=5)
