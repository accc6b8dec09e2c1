"""Headless Chromium with the bridge's unpacked extension, and a local HTTPS stand-in for a
government site at a ``*.go.jp`` name (``--host-resolver-rules``) that does what the sites do:
it looks for the hidden inputs, sends ``launchApp`` and reads ``recvMsg``.

The page runs a loop: it fetches the next job from the test server, dispatches it and posts
what it got back, so one browser serves a whole test module."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SITE_NAME = "myna.test.go.jp"
OTHER_NAME = "other.example.test"

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>stand-in</title></head>
<body><p>stand-in for a government site</p><script>
"use strict";
const post = (body) => fetch("/result", {method: "POST", body: JSON.stringify(body)});
const launch = (request, count) => new Promise((resolve) => {
  const answers = [];
  const on = (event) => {
    answers.push(JSON.parse(event.detail));
    if (answers.length === count) {
      document.removeEventListener("recvMsg", on);
      resolve(answers);
    }
  };
  document.addEventListener("recvMsg", on);
  for (let i = 0; i < count; i++) {
    document.dispatchEvent(new CustomEvent("launchApp", {detail: JSON.stringify(request)}));
  }
});
const describe = async () => {
  const data = navigator.userAgentData;
  return {
    kind: "hello",
    origin: location.origin,
    inputs: {
      extension: document.getElementById("extension-is-installed")?.value ?? null,
      app: document.getElementById("app-is-installed")?.value ?? null,
    },
    userAgent: navigator.userAgent,
    platform: data ? data.platform : null,
    high: data ? await data.getHighEntropyValues(["platform", "architecture", "bitness"]) : null,
  };
};
window.addEventListener("load", async () => {
  await post(await describe());
  for (;;) {
    const job = await (await fetch("/next")).json();
    if (job.wait) continue;
    if (job.navigate) { location.href = job.navigate; return; }
    await post({kind: "answers", answers: await launch(job.request, job.count || 1)});
  }
});
</script></body></html>"""

OTHER_PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body><script>
window.addEventListener("load", async () => {
  let answered = false;
  document.addEventListener("recvMsg", () => { answered = true; });
  document.dispatchEvent(new CustomEvent("launchApp", {detail: JSON.stringify(
    {mode: "check"})}));
  // The bridge's answers come within milliseconds on a go.jp page; give it ample time.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await fetch("/result", {method: "POST", body: JSON.stringify({
    kind: "other", answered,
    inputs: document.getElementById("extension-is-installed") !== null,
    userAgent: navigator.userAgent})});
  location.href = "https://SITE/";
});
</script></body></html>"""


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE_NAME)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(SITE_NAME), x509.DNSName(OTHER_NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "site.pem", directory / "site.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem = serialization.Encoding.PEM
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class StandInSite:
    """The HTTPS server: jobs for the page, results from it."""

    def __init__(self, directory: Path) -> None:
        self.jobs: queue.Queue[dict[str, Any]] = queue.Queue()
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/next":
                    try:
                        job = site.jobs.get(timeout=20)
                    except queue.Empty:
                        job = {"wait": True}
                    self._send(json.dumps(job).encode(), "application/json")
                elif self.path == "/other":
                    page = OTHER_PAGE.replace("SITE", f"{SITE_NAME}:{site.port}")
                    self._send(page.encode(), "text/html; charset=utf-8")
                else:
                    self._send(PAGE.encode(), "text/html; charset=utf-8")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                site.results.put(json.loads(self.rfile.read(length)))
                self._send(b"{}", "application/json")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed(directory))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://{SITE_NAME}:{self.port}/"

    @property
    def origin(self) -> str:
        return f"https://{SITE_NAME}:{self.port}"

    def result(self, timeout: float = 90) -> dict[str, Any]:
        return self.results.get(timeout=timeout)

    def send(self, request: dict[str, Any], count: int = 1) -> list[dict[str, Any]]:
        """Have the page dispatch ``request`` (``count`` times at once); its answers."""
        self.jobs.put({"request": request, "count": count})
        result = self.result()
        assert result["kind"] == "answers", result
        return result["answers"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def chromium_binary() -> str:
    found = shutil.which("chromium")
    assert found, "Debian's chromium is needed (./scripts/setup installs it)"
    return found


class Chromium:
    """Headless Chromium with the extension loaded unpacked, on ``site``'s page."""

    def __init__(self, directory: Path, extension: Path, profile: Path, env: dict[str, str],
                 site: StandInSite) -> None:  # fmt: skip
        self.log_path = directory / "chromium.log"
        args = [
            chromium_binary(), "--headless=new", f"--user-data-dir={profile}",
            f"--load-extension={extension}", f"--disable-extensions-except={extension}",
            f"--host-resolver-rules=MAP {SITE_NAME} 127.0.0.1, MAP {OTHER_NAME} 127.0.0.1",
            "--ignore-certificate-errors", "--no-first-run", "--no-default-browser-check",
            "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            *(["--no-sandbox"] if os.getuid() == 0 else []),
            site.url,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
