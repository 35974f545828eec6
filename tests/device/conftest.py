"""Fixtures for the device tests: the provisioning module, the phone's own checker, a test CA and an HTTPS
server on 127.0.0.1 that serves provisioning files."""

from __future__ import annotations

import http.server
import importlib.util
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROVISION = REPO / "image" / "provision" / "firmware_provision.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The image build and boot (marker ``slow``) run only when asked for with ``-m slow``: a plain
    ``pytest`` (CI) must not start a build of an hour. An explicit ``-m`` (pyproject's default ``not slow``
    included) already selects or deselects them; this guards a run with the marker expression emptied."""
    if config.getoption("markexpr", ""):
        return
    skip = pytest.mark.skip(reason="builds and boots the SD image: run with -m slow (image/README.md)")
    for item in items:
        if "slow" in item.keywords and item.path.is_relative_to(HERE):
            item.add_marker(skip)


def _load_provision() -> ModuleType:
    spec = importlib.util.spec_from_file_location("firmware_provision", PROVISION)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["firmware_provision"] = module
    spec.loader.exec_module(module)
    return module


fp = _load_provision()


@pytest.fixture(scope="session")
def provision() -> ModuleType:
    return fp


@pytest.fixture(scope="session")
def checker() -> list[str]:
    """The phone's own ``firmware-app`` command, from the venv that runs the tests."""
    path = Path(sys.executable).with_name("firmware-app")
    if not path.exists():
        found = shutil.which("firmware-app")
        assert found, "firmware-app is not installed in the test venv (tests/setup.sh)"
        path = Path(found)
    return [str(path)]


# --- a test CA, a server certificate for 127.0.0.1, and a second CA that did not sign it ------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=firmware {name}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                 cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return Pki(d / "ca.pem", d / "other-ca.pem", d / "server.pem", d / "server.key")


# --- an HTTPS server on 127.0.0.1 -------------------------------------------------------------------------


@dataclass
class ProvisioningServer:
    """Serves ``files`` (path -> bytes, or (status, location) for a redirect) and records each GET."""

    port: int
    files: dict[str, bytes | tuple[int, str]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def url(self, path: str = "/phones/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture
def https_server(pki: Pki) -> Iterator[ProvisioningServer]:
    server_state = ProvisioningServer(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            server_state.requests.append((self.path, self.headers.get("User-Agent", "")))
            body = server_state.files.get(self.path)
            if body is None:
                self.send_error(404)
            elif isinstance(body, tuple):
                self.send_response(body[0])
                self.send_header("Location", body[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Type", "application/toml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    server_state.port = httpd.server_address[1]
    thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.05), name="provisioning-https", daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
