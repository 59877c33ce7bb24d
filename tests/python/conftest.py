"""One Vektagraf node for the whole session, and what tests need to talk to it.

The node is `$VEKTAGRAF_BIN serve` on ephemeral ports over a temporary data directory. It is
always stopped at the end (SIGTERM, then SIGKILL after 10 s), also when tests fail or pytest is
interrupted. Tests get the node's URL, its admin token, and a read-only token.

At the end a line in cargo's format (`test result: ok. N passed; M failed; 0 ignored`) lets
scripts/test.sh count these tests in its total.
"""

from __future__ import annotations

import atexit
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
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 120.0
# The seed of the random operations compared with local mode; VEKTAGRAF_PY_SEED replays a run.
SEED = int(os.environ.get("VEKTAGRAF_PY_SEED", "20261125"))


def pytest_report_header(config):
    return f"vektagraf: random seed {SEED} (set VEKTAGRAF_PY_SEED to replay another)"


def pytest_configure(config):
    # qdrant-client warns that an api key goes over plain HTTP; the node here is on loopback.
    config.addinivalue_line("filterwarnings", "ignore:Api key is used with an insecure connection")
    # local mode (the reference) says that it has no HNSW; the node's search_params are tested
    config.addinivalue_line("filterwarnings", "ignore:Local mode performs exact")


@dataclass
class Node:
    url: str
    quic: str
    data: Path
    admin_token: str = field(repr=False)
    read_token: str = field(repr=False)
    log: Path = field(repr=True)

    def client(self, token: str | None = "admin", **kw):
        """A qdrant-client pointed at the node (REST), with the admin token by default."""
        from qdrant_client import QdrantClient

        key = {"admin": self.admin_token, "read": self.read_token}.get(token, token)
        return QdrantClient(url=self.url, api_key=key, prefer_grpc=False, timeout=60, **kw)


def _binary() -> Path:
    b = Path(os.environ.get("VEKTAGRAF_BIN", REPO / "target/release/vektagraf"))
    if not b.is_absolute():
        b = REPO / b
    if not b.exists():
        pytest.exit(f"node binary {b} not found (set VEKTAGRAF_BIN or build it)", returncode=2)
    return b


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGKILL when pytest dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@pytest.fixture(scope="session")
def node(request):
    binary = _binary()
    tmp = Path(tempfile.mkdtemp(prefix="vektagraf-py-"))
    data = tmp / "data"
    log = tmp / "node.log"
    logf = open(log, "w")
    proc = subprocess.Popen(
        [str(binary), "serve", "--data", str(data),
         "--quic-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=logf, text=True, bufsize=1,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    atexit.register(_stop, proc)
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # a SIGTERM to pytest stops the node too
        _stop(proc)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    found: dict[str, str] = {}
    seen_http = threading.Event()

    def read_stdout():
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write("stdout: " + line)
            logf.flush()
            m = re.match(r"\s+(QUIC|HTTP)\s+(\S+)", line)
            if m:
                found[m.group(1)] = m.group(2)
                if m.group(1) == "HTTP":
                    seen_http.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not seen_http.wait(0.2):
            if proc.poll() is not None:
                pytest.fail(f"the node exited with {proc.returncode} before serving:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the node printed no HTTP address in {STARTUP_TIMEOUT:.0f} s:\n{_tail(log)}")
        url = found["HTTP"].rstrip("/")
        quic = found["QUIC"]
        while True:
            try:
                with urllib.request.urlopen(url + "/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the node did not become ready:\n{_tail(log)}")
            time.sleep(0.2)
        admin = (data / "admin.token").read_text().strip()
        made = subprocess.run(
            [str(binary), "token", "create", "--name", f"pytest-read-{uuid.uuid4().hex[:8]}",
             "--role", "read", "--remote", quic, "--token", admin,
             "--ca", str(data / "tls" / "ca.pem"), "--json"],
            capture_output=True, text=True, timeout=60,
        )
        if made.returncode != 0:
            pytest.fail(f"token create failed: {made.stderr}{made.stdout}")
        read_token = json.loads(made.stdout)["token"]
        yield Node(url=url, quic=quic, data=data, admin_token=admin,
                   read_token=read_token, log=log)
    finally:
        _stop(proc)
        signal.signal(signal.SIGTERM, previous_term)
        reader.join(timeout=5)
        logf.close()
        notes = []
        if request.session.testsfailed:
            notes.append(f"the node's log ends:\n{_tail(log)}")
        if os.environ.get("VEKTAGRAF_KEEP_DATA"):
            notes.append(f"node data and log kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        if notes:
            capture = request.config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():
                print("\n" + "\n".join(notes))


@pytest.fixture
def client(node):
    c = node.client()
    yield c
    c.close()


@pytest.fixture
def seed():
    return SEED


@pytest.fixture
def collection_name():
    """A collection name of the test's own."""
    return f"py_{uuid.uuid4().hex[:12]}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    stats = terminalreporter.stats
    passed = len(stats.get("passed", []))
    failed = len(stats.get("failed", [])) + len(stats.get("error", []))
    ignored = len(stats.get("skipped", []))
    word = "ok" if failed == 0 and exitstatus == 0 else "FAILED"
    terminalreporter.write_line(
        f"test result: {word}. {passed} passed; {failed} failed; {ignored} ignored"
    )
