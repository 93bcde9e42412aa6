"""Fixtures for the serving tests: the fake model, a store, keys, and the real `rlm serve` / `rlm mcp`.

The `rlm` binary is `$RLM_BIN` (default: /work/main/.build/debug/rlm, else this checkout's .build/debug/rlm).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OPENAPI = REPO / "docs" / "openapi.json"
MODEL = "fake-model"
# What the server sends to the fake model as its key (never to appear in an answer or error).
UPSTREAM_KEY = "sk-fake-upstream-" + "5ecret" * 4

# Generous for a slow shared 2-core machine: a debug build starting, SQLite opening, the sandbox probe.
START_TIMEOUT = float(os.environ.get("RLM_SERVING_START_TIMEOUT", "90"))
STOP_TIMEOUT = 15.0
LISTENING = re.compile(r"listening on (https?://[^\s]+)")

FIGURES: list[str] = []


def record_figure(text: str) -> None:
    """A measured figure, printed in the summary at the end of the run."""
    FIGURES.append(text)
    print(text, file=sys.stderr)


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("serving figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


# MARK: - the binary and the environment


def rlm_binary() -> str:
    candidates = [os.environ.get("RLM_BIN"), "/work/main/.build/debug/rlm", str(REPO / ".build" / "debug" / "rlm")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"no rlm binary: set RLM_BIN or build it (swift build); looked at {[c for c in candidates if c]}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def rlm_bin() -> str:
    return rlm_binary()


@pytest.fixture(scope="session")
def scratch():
    """A directory for the whole run: HOME, XDG dirs, stores, roots. Removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="rlm-serving-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def base_environment(scratch: Path) -> dict[str, str]:
    """What every rlm process gets: a scratch HOME and XDG dirs, and the fake upstream key (sent only because the
    command line says --api-key-env OPENAI_API_KEY)."""
    home = scratch / "home"
    for sub in ("", ".local/share", ".local/state", ".cache", ".config"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "LANG": "C.UTF-8",
    }
    for name in ("TMPDIR", "XDG_RUNTIME_DIR"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@pytest.fixture(scope="session")
def rlm_env(scratch) -> dict[str, str]:
    return base_environment(scratch)


# MARK: - the fake model


class FakeModel:
    """`fake_model.py` in its own process (so its threads never share a GIL with the tests' measurements)."""

    def __init__(self, delay: float = 0.0):
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "fake_model.py"), "--port", "0", "--delay", str(delay)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        line = self.process.stdout.readline()
        match = LISTENING.search(line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"the fake model did not start: {line!r}")
        self.origin = match.group(1)
        self.url = self.origin + "/v1"
        # Drain its output so it never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stats(self) -> dict:
        return httpx.get(self.origin + "/_fake/stats", timeout=10).json()

    def configure(self, **config) -> dict:
        return httpx.post(self.origin + "/_fake/config", json=config, timeout=10).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def fake_model():
    model = FakeModel()
    yield model
    model.stop()


# MARK: - keys


class Keys:
    """`rlm keys` on one store."""

    def __init__(self, rlm_bin: str, store: Path, env: dict[str, str]):
        self.rlm_bin, self.store, self.env = rlm_bin, store, env

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.rlm_bin, "keys", *args, "--store", str(self.store)],
            env=self.env, capture_output=True, text=True, timeout=120,
        )

    def create(self, name: str | None = None, *, rpm=None, tokens_per_day=None, max_concurrent=None,
               max_cost=None) -> str:
        """Creates a key and returns it (the last line of stdout)."""
        name = name or f"k-{uuid.uuid4().hex[:10]}"
        args = ["create", name]
        for flag, value in (("--rpm", rpm), ("--tokens-per-day", tokens_per_day),
                            ("--max-concurrent", max_concurrent), ("--max-cost", max_cost)):
            if value is not None:
                args += [flag, str(value)]
        result = self.run(*args)
        assert result.returncode == 0, f"rlm keys create failed ({result.returncode}): {result.stderr}"
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        assert lines, f"rlm keys create printed no key: {result.stdout!r} {result.stderr!r}"
        return lines[-1]

    def revoke(self, id_or_name: str) -> None:
        result = self.run("revoke", id_or_name)
        assert result.returncode == 0, f"rlm keys revoke failed ({result.returncode}): {result.stderr}"

    def list(self) -> list:
        result = self.run("list", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


# MARK: - the server


def process_tree(root: int) -> set[int]:
    """`root` and every process descended from it, now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in tree:
            continue
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


class Server:
    """A real `rlm serve` on a free port, over the fake model."""

    def __init__(self, rlm_bin: str, store: Path, env: dict[str, str], model_url: str, extra: list[str] = (),
                 roots: list[Path] = ()):
        self.store = store
        store.mkdir(parents=True, exist_ok=True)
        self.args = [
            rlm_bin, "serve", "--port", "0", "--store", str(store),
            "--provider", "openai", "--base-url", model_url, "--model", MODEL,
            "--api-key-env", "OPENAI_API_KEY",
        ]
        for root in roots:
            self.args += ["--root", str(root)]
        self.args += list(extra)
        self.stderr_lines: list[str] = []
        self.started = time.time()
        self.process = subprocess.Popen(
            self.args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.pid = self.process.pid
        self._listening = threading.Event()
        self.url = None
        threading.Thread(target=self._read_stderr, daemon=True).start()
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        deadline = time.time() + START_TIMEOUT
        while not self._listening.wait(0.1):
            if self.process.poll() is not None:
                time.sleep(0.2)
                pytest.fail(f"rlm serve exited with {self.process.returncode} before listening:\n{self.stderr()}",
                            pytrace=False)
            if time.time() > deadline:
                self.process.kill()
                pytest.fail(f"rlm serve did not say 'listening on' in {START_TIMEOUT} s:\n{self.stderr()}",
                            pytrace=False)
        self.stopped = False

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.append(line)
            if self.url is None and (match := LISTENING.search(line)):
                self.url = match.group(1).rstrip("/")
                self._listening.set()

    def stderr(self) -> str:
        return "".join(self.stderr_lines[-200:])

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def client(self, key: str | None, **kwargs):
        import openai

        kwargs.setdefault("timeout", 120)
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.api, api_key=key if key is not None else "", **kwargs)

    def http(self, key: str | None = None, **kwargs) -> httpx.Client:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        kwargs.setdefault("timeout", 120)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then the exit status within `timeout` seconds (None: still running, killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        finally:
            self.stopped = True

    def stop(self) -> None:
        """SIGTERM; asserts an exit with status 0 within 15 s."""
        if self.stopped:
            return
        began = time.monotonic()
        status = self.terminate()
        assert status is not None, f"rlm serve did not exit within {STOP_TIMEOUT} s of SIGTERM:\n{self.stderr()}"
        assert status == 0, f"rlm serve exited with {status} after SIGTERM ({time.monotonic() - began:.1f} s):\n" \
                            f"{self.stderr()}"


@pytest.fixture(scope="session")
def start_server(rlm_bin, rlm_env, fake_model, scratch):
    """Starts servers (stopped at the end of the session unless the test stops them)."""
    servers: list[Server] = []

    def start(extra: list[str] = (), store: Path | None = None, model: FakeModel | None = None,
              roots: list[Path] = ()) -> Server:
        store = store or scratch / f"store-{uuid.uuid4().hex[:8]}"
        server = Server(rlm_bin, store, rlm_env, (model or fake_model).url, list(extra), roots)
        servers.append(server)
        return server

    yield start
    failures = []
    for server in servers:
        try:
            server.stop()
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="session")
def root_dir(scratch) -> Path:
    """The --root of the servers: a file inside, a file just outside, and a symbolic link leading out."""
    root = scratch / "root"
    root.mkdir(exist_ok=True)
    (root / "app.log").write_text("boot ok\nERROR disk\nwarn\nERROR net\n")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "notes.txt").write_text("ERROR once\n")
    (scratch / "outside.txt").write_text("secret ERROR outside the root\n")
    link = root / "escape.txt"
    if not link.exists():
        link.symlink_to(scratch / "outside.txt")
    dirlink = root / "escape-dir"
    if not dirlink.exists():
        dirlink.symlink_to(scratch)
    return root


@pytest.fixture(scope="session")
def server(start_server, root_dir) -> Server:
    """The shared server: `--max-body 1` (MiB), one root, no CORS."""
    return start_server(["--max-body", "1"], roots=[root_dir])


@pytest.fixture(scope="session")
def keys(server, rlm_bin, rlm_env) -> Keys:
    return Keys(rlm_bin, server.store, rlm_env)


@pytest.fixture(scope="session")
def key(keys) -> str:
    """A key with room for the whole suite's requests."""
    return keys.create("main", rpm=100000, max_concurrent=8)


@pytest.fixture(scope="session")
def other_key(keys) -> str:
    return keys.create("other", rpm=100000, max_concurrent=8)


# MARK: - checks shared by the test files

LEAK_MARKERS = ("/work", "/root", "/home/", ".swift", "Traceback", "Sources/", "Fatal error", "/tmp/", UPSTREAM_KEY)


def assert_error(response: httpx.Response, status: int | tuple[int, ...], *, extra_markers: tuple[str, ...] = ()) -> dict:
    """The response is `status` with OpenAI's error body, which holds no stack trace, path or secret."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, f"expected {statuses}, got {response.status_code}: {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    error = body["error"]
    assert isinstance(error.get("message"), str) and error["message"], body
    assert isinstance(error.get("type"), str) and error["type"], body
    assert "code" in error and (error["code"] is None or isinstance(error["code"], str)), body
    assert "param" in error and (error["param"] is None or isinstance(error["param"], str)), body
    assert_no_leak(response.text, extra_markers)
    return error


def assert_no_leak(text: str, extra_markers: tuple[str, ...] = ()) -> None:
    for marker in LEAK_MARKERS + tuple(extra_markers):
        assert marker not in text, f"{marker!r} leaked in {text[:1000]!r}"
