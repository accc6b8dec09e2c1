"""Headless Chromium and Firefox ESR with the bridge's extension, and a local HTTPS stand-in for a
government site at a ``*.go.jp`` name (``--host-resolver-rules``) that does what the sites do:
it looks for the hidden inputs, sends ``launchApp`` and reads ``recvMsg``.

The page runs a loop: it fetches the next job from the test server, dispatches it and posts
what it got back, so one browser serves a whole test module."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import queue
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bridgestack import Pinentry, daemon_env
from busstack import Daemon, daemon_on_private_bus
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


def certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA (for browsers that must trust it: Firefox) and the site's certificate and key."""
    now = dt.datetime.now(dt.UTC)

    def build(subject: str, issuer: x509.Name | None, public: Any, signer: Any, ca: bool):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if not ca:
            names = [x509.DNSName(SITE_NAME), x509.DNSName(OTHER_NAME)]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("mncd test CA", None, ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = build(SITE_NAME, ca.subject, key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "site.pem", directory / "site.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


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
        self.ca, cert, key = certificates(directory)
        context.load_cert_chain(cert, key)
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
            "--remote-debugging-port=0",
            *(["--no-sandbox"] if os.getuid() == 0 else []),
            site.url,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
        )  # fmt: skip

        self.profile = profile

    def evaluate_in_tab(self, url: str, expression: str, locale: str = "") -> Any:
        """Open ``url`` in a new tab (with ``locale`` as the browser's language), wait until
        ``expression`` is true-ish and return its value (the DevTools protocol)."""
        return asyncio.run(self._evaluate_in_tab(url, expression, locale))

    async def _evaluate_in_tab(self, url: str, expression: str, locale: str) -> Any:
        import aiohttp

        port_file = self.profile / "DevToolsActivePort"
        for _ in range(200):
            if port_file.exists() and len(port_file.read_text().splitlines()) == 2:
                break
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as socket,
        ):
            counter = iter(range(1, 1_000_000))

            async def call(method: str, session: str = "", **params: Any) -> dict[str, Any]:
                ident = next(counter)
                message: dict[str, Any] = {"id": ident, "method": method, "params": params}
                if session:
                    message["sessionId"] = session
                await socket.send_json(message)
                while True:
                    answer = await socket.receive_json()
                    if answer.get("id") == ident:
                        assert "error" not in answer, answer
                        return answer["result"]

            target = (await call("Target.createTarget", url="about:blank"))["targetId"]
            session = (await call("Target.attachToTarget", targetId=target, flatten=True))[
                "sessionId"
            ]
            if locale:
                await call("Emulation.setLocaleOverride", session, locale=locale)
                await call("Network.enable", session)
                await call("Network.setUserAgentOverride", session,
                           userAgent="Mozilla/5.0", acceptLanguage=locale)  # fmt: skip
            await call("Page.navigate", session, url=url)
            try:
                for _ in range(600):
                    result = await call("Runtime.evaluate", session, expression=expression,
                                        returnByValue=True)  # fmt: skip
                    value = result.get("result", {}).get("value")
                    if value:
                        return value
                    await asyncio.sleep(0.05)
                raise TimeoutError(f"{expression} stayed false in {url}")
            finally:
                await call("Target.closeTarget", targetId=target)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


FIREFOX_PREFS = {
    "xpinstall.signatures.required": False,
    "extensions.autoDisableScopes": 0,
    "extensions.enabledScopes": 15,
    "network.dns.forceResolve": "127.0.0.1",
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
}


class Firefox:
    """Headless Firefox ESR with the bridge's packed extension installed in a fresh profile
    (unsigned add-ons allowed, as ESR permits), trusting the stand-in site's test CA and
    resolving every name to this machine."""

    def __init__(self, directory: Path, packed: Path, addon_id: str, env: dict[str, str],
                 site: StandInSite) -> None:  # fmt: skip
        profile = directory / "firefox-profile"
        (profile / "extensions").mkdir(parents=True)
        shutil.copyfile(packed, profile / "extensions" / f"{addon_id}.xpi")
        prefs = FIREFOX_PREFS.items()
        lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs]
        (profile / "user.js").write_text("".join(lines))
        certutil = shutil.which("certutil")
        assert certutil, "NSS's certutil is needed (libnss3-tools)"
        subprocess.run([certutil, "-N", "-d", f"sql:{profile}", "--empty-password"], check=True)
        subprocess.run([certutil, "-A", "-d", f"sql:{profile}", "-n", "mncd test CA",
                        "-t", "C,,", "-i", str(site.ca)], check=True)  # fmt: skip
        binary = shutil.which("firefox-esr")
        assert binary, "Debian's firefox-esr is needed (./scripts/setup installs it)"
        self.log_path = directory / "firefox.log"
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-remote", "--profile", str(profile), site.url],
            env={**env, "MOZ_HEADLESS": "1"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log_path.open("wb"),
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # the browser's own process group: its children too
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


MNCCTL = Path(sys.executable).with_name("mncctl")


@dataclass
class Session:
    """A browser on the stand-in site, the daemon behind it, and the user's environment."""

    daemon: Daemon
    entry: Pinentry
    site: StandInSite
    browser: Chromium | Firefox
    hello: dict[str, Any]
    env: dict[str, str]
    profile: Path

    def mncctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(MNCCTL), *args], env=self.env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip


@contextmanager
def bridge_session(
    directory: Path,
    sandbox_env: dict[str, str],
    start: Callable[[Path, Path, Path, dict[str, str], StandInSite], Chromium | Firefox],
) -> Iterator[Session]:
    """The daemon on a private bus with a scripted pinentry, ``mncctl browser install
    --chromium PROFILE`` in a scratch HOME under a non-ASCII name, the stand-in site, and the
    browser ``start`` starts on it; everything stopped afterwards."""
    entry, env = daemon_env(directory, sandbox_env)
    # The user's files under a non-ASCII name (the bus's own address must stay ASCII).
    home = directory / "ダウンロード" / "home"
    profile = directory / "ダウンロード" / "profile"
    with daemon_on_private_bus(directory, env) as daemon:
        user_env = {**os.environ, "HOME": str(home), "LANG": "C.UTF-8",
                    "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address}  # fmt: skip
        user_env.pop("XDG_DATA_HOME", None)
        user_env.pop("XDG_CONFIG_HOME", None)
        command = [str(MNCCTL), "browser", "install", "--chromium", str(profile)]
        installed = subprocess.run(command, env=user_env, capture_output=True, text=True,
                                   timeout=60)  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        site = StandInSite(directory)
        browser = start(directory, home, profile, user_env, site)
        try:
            hello = site.result(timeout=120)
            yield Session(daemon, entry, site, browser, hello, user_env, profile)
        finally:
            browser.stop()
            site.stop()
