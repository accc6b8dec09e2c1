"""Browsers log in with the card through mncd, as a user would set them up.

An ordinary user (``desktopuser``) with Debian's OpenSC installed, whose Firefox ESR made its
profile where it chooses (``~/.config/mozilla/firefox``), runs ``mncctl pkcs11 install``; Firefox
(headless) then opens a page of ``openssl s_server -Verify 1``, which asks for a client
certificate. The daemon's PIN dialog is a scripted pinentry, which records every dialog.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from busstack import wait_for
from conftest import READERS, wait_for_card
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from desktopuser import DesktopUser, desktop_user, user_daemon
from marionette import Marionette, MarionetteError
from pinentry_script import ScriptedPinentry
from pkcs11stack import p11_kit_module

from mncd.vcard.profile import CardProfile

AUTH_PIN = "1234"
#: Preferences of the test profile: choose the client certificate without asking, and no
#: first-run pages.
PREFS = {
    "security.default_personal_cert": "Select Automatically",
    "browser.shell.checkDefaultBrowser": False,
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.auto": False,
    "browser.startup.homepage_override.mstone": "ignore",
}


@dataclass
class BrowserStack:
    user: DesktopUser
    card: str
    control: object
    pinentry: ScriptedPinentry
    pki: Path  #: the test server's CA, certificate and key; the card's CA

    def commands(self, clear: bool = False) -> list[str]:
        return self.control.commands(self.card, clear)  # type: ignore[attr-defined]

    def log(self) -> str:
        return (self.user.root / "mncd.log").read_text()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_pki(directory: Path, auth_ca: bytes) -> Path:
    """A CA and a certificate for localhost (the page), and the card's CA (the client's)."""
    directory.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "30", "-subj", "/CN=mncd test server CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=localhost")  # fmt: skip
    (directory / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "30",
            "-extfile", "ext.cnf")  # fmt: skip
    (directory / "card-ca.der").write_bytes(auth_ca)
    openssl("x509", "-inform", "DER", "-in", "card-ca.der", "-out", "card-ca.pem")
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


@pytest.fixture(scope="module")
def stack(sandbox) -> Iterator[BrowserStack]:
    with desktop_user(sandbox) as user:
        control = sandbox.control
        name = f"browser-card-{time.monotonic_ns()}"
        control.insert(CardProfile(), slot=0, card=name)
        wait_for_card(READERS[0], present=True)
        try:
            pinentry = ScriptedPinentry(user.root / "pinentry", [AUTH_PIN] * 20)
            # Run by an interpreter the user may run (the test's may be in root's home).
            pinentry.program.write_text(
                pinentry.program.read_text().replace(sys.executable, user.python, 1)
            )
            user.own(user.root / "pinentry")
            config = user.home / ".config" / "mncd"
            config.mkdir(parents=True)
            (config / "config.toml").write_text(f'[pinentry]\nprogram = "{pinentry.program}"\n')
            user.own(user.home / ".config")
            pki = _server_pki(user.root / "pki", control.certificates(name)["auth-ca"])
            with user_daemon(user, DISPLAY=":99"):
                yield BrowserStack(user, name, control, pinentry, pki)
        finally:
            if control.remove(0):
                wait_for_card(READERS[0], present=False)


@pytest.fixture(scope="module")
def firefox(stack: BrowserStack) -> Path:
    """Firefox started once (it makes its profile where it chooses), trusting the test server,
    and ``mncctl pkcs11 install`` run; the profile."""
    shot = stack.user.root / "first-start.png"
    first = stack.user.run("firefox-esr", "--headless", "--screenshot", str(shot),
                           "about:blank", timeout=120, pcsc=True)  # fmt: skip
    profiles = list((stack.user.home / ".config" / "mozilla" / "firefox").glob("*/cert9.db"))
    assert profiles, first.stdout + first.stderr
    profile = profiles[0].parent
    prefs = "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items())
    (profile / "user.js").write_text(prefs)
    stack.user.own(profile / "user.js")
    trusted = stack.user.run("certutil", "-A", "-d", f"sql:{profile}", "-n", "mncd test CA",
                             "-t", "C,,", "-i", str(stack.pki / "ca.pem"))  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    installed = stack.user.mncctl("pkcs11", "install")
    assert installed.returncode == 0, installed.stderr
    # It says what it wrote where: OpenSC kept out of p11-kit's proxy, the profile registered.
    modules = stack.user.home / ".config" / "pkcs11" / "modules"
    assert f"OpenSC: wrote {modules / 'opensc-pkcs11.module'} (disable-in: p11-kit-proxy)" in (
        installed.stdout
    )
    assert f"NSS database {profile}: registered p11-kit's proxy" in installed.stdout
    return profile


@dataclass
class TlsServer:
    process: subprocess.Popen[str]
    port: int
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def running_firefox(stack: BrowserStack, firefox: Path) -> Iterator[Marionette]:
    """Firefox ESR started headless by the user (with the machine's pcscd, where OpenSC would
    find the card too), driven through Marionette."""
    port = _free_port()
    prefs = firefox / "user.js"
    text = prefs.read_text()
    prefs.write_text(text + f'user_pref("marionette.port", {port});\n')
    command = stack.user.command("firefox-esr", "--headless", "--marionette", pcsc=True)
    log = (stack.user.root / "firefox.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=log, cwd=stack.user.root)
    try:
        driver = Marionette(port)
        yield driver
        driver.quit()
        process.wait(timeout=60)
    finally:
        prefs.write_text(text)
        if process.poll() is None:
            process.kill()
            process.wait()


@contextmanager
def tls_server(stack: BrowserStack, version: str) -> Iterator[TlsServer]:
    """``openssl s_server -Verify 1`` asking for a certificate of the card's CA; no session
    cache or tickets, so each connection is a full handshake with a signature of the card."""
    port = _free_port()
    output = stack.user.root / f"s_server-{version}-{port}.log"
    process = subprocess.Popen(
        ["openssl", "s_server", "-accept", str(port), f"-{version}", "-Verify", "1",
         "-verify_return_error", "-cert", "server.pem", "-key", "server.key",
         "-CAfile", "card-ca.pem", "-www", "-no_cache", "-no_ticket"],
        cwd=stack.pki, stdout=output.open("w"), stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: "ACCEPT" in output.read_text(), "openssl s_server")
        yield TlsServer(process, port, output)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _card_work(commands: list[str]) -> dict[str, int]:
    """What the card was asked to do: VERIFYs of each PIN, signatures, reads."""
    return {
        "verify": sum(c.startswith("0020008004") for c in commands),
        "sign": sum(c.startswith("802A") for c in commands),
        "read": sum(c.startswith("00B0") for c in commands),
        "signing key": sum(c.startswith(("00A4020C02001A", "00A4020C02001B")) for c in commands),
    }


def test_firefox_logs_in_over_tls_1_2_twice_and_never_asks_for_the_signing_password(
    stack, running_firefox
):
    firefox = running_firefox
    log_start = len(stack.log())
    dialogs = stack.pinentry.descriptions()
    assert not [d for d in dialogs if "signing" in d], dialogs  # none at Firefox's start
    stack.commands(clear=True)
    with tls_server(stack, "tls1_2") as server:
        for n in range(2):
            firefox.navigate(f"https://localhost:{server.port}/?login={n}")
            page = firefox.text()
            assert "Client certificate" in page and "JPKI for user authentication" in page, page
    work = _card_work(stack.commands())
    # Two log-ins, each a signature of the card's authentication key, made by mncd: no
    # certificate read (OpenSC would read them), no signing key touched.
    assert work["sign"] >= 2 and work["read"] == 0 and work["signing key"] == 0, work
    new_dialogs = stack.pinentry.descriptions()[len(dialogs) :]
    assert len(new_dialogs) == 1, new_dialogs  # the PIN once, held for Firefox's log-ins
    assert "firefox-esr" in new_dialogs[0] and "prove who you are (log in)" in new_dialogs[0]
    log = stack.log()[log_start:]
    assert "PKCS#11 C_Sign with the auth key by /usr/lib/firefox-esr/firefox-esr" in log
    assert "(pkcs11-signing)" not in log  # Firefox never reached the signing token


def test_firefox_over_tls_1_3_asks_for_no_pin(stack, running_firefox):
    firefox = running_firefox
    dialogs = len(stack.pinentry.descriptions())
    stack.commands(clear=True)
    with tls_server(stack, "tls1_3") as server:
        with pytest.raises(MarionetteError) as refused:
            firefox.navigate(f"https://localhost:{server.port}/")
        assert "about:neterror" in refused.value.message  # the page Firefox shows
        assert "peer did not return a certificate" in server.text()
    assert stack.pinentry.descriptions()[dialogs:] == []  # no PIN typed for nothing
    assert _card_work(stack.commands())["verify"] == 0
    assert "no RSA-PSS" in stack.log()


def test_pkcs11_tool_signs_with_the_signing_token_through_p11_kit(stack, firefox):
    """A document-signing program (pkcs11-tool is one of them) still reaches the signing
    token through p11-kit's proxy; OpenSC's module does not answer there."""
    data = stack.user.home / "document.txt"
    data.write_text("a document to sign\n")
    signature = stack.user.home / "document.sig"
    proxy = p11_kit_module("p11-kit-proxy.so")
    listed = stack.user.run("pkcs11-tool", "--module", proxy, "--list-token-slots", pcsc=True)
    assert listed.stdout.count("JPKI (Digital Signature PIN)") == 1, listed.stdout
    assert listed.stdout.count("JPKI (User Authentication PIN)") == 1, listed.stdout
    signed = stack.user.run(
        "pkcs11-tool", "--module", proxy, "--token-label", "JPKI (Digital Signature PIN)",
        "--login", "--pin", "ABC123", "--sign", "-m", "SHA256-RSA-PKCS", "--id", "02",
        "-i", str(data), "-o", str(signature), pcsc=True, timeout=120,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stdout + signed.stderr
    certificate = x509.load_der_x509_certificate(
        stack.control.certificates(stack.card)["sign"]  # type: ignore[attr-defined]
    )
    certificate.public_key().verify(  # type: ignore[union-attr, call-arg]
        signature.read_bytes(), data.read_bytes(), padding.PKCS1v15(), hashes.SHA256()
    )
    assert "(pkcs11-signing)" in stack.log()


def test_p11_kit_shows_the_signing_token_by_program_name(stack, firefox):
    """p11-kit enables ``mncd-signing.module`` by the program's name: LibreOffice's
    ``soffice.bin`` sees the signing token through the proxy, a program named like Firefox does
    not (pkcs11-tool under those names; LibreOffice itself is not installed here)."""
    proxy = p11_kit_module("p11-kit-proxy.so")
    tokens = {}
    for name in ("soffice.bin", "firefox-esr"):
        copy = stack.user.root / "programs" / name
        copy.parent.mkdir(exist_ok=True)
        shutil.copy("/usr/bin/pkcs11-tool", copy)
        listed = stack.user.run(str(copy), "--module", proxy, "--list-token-slots", pcsc=True)
        assert listed.returncode == 0, listed.stderr
        tokens[name] = listed.stdout
    assert "JPKI (Digital Signature PIN)" in tokens["soffice.bin"]
    assert "JPKI (Digital Signature PIN)" not in tokens["firefox-esr"]
    # Once: OpenSC's module, which sees the card here too, is not loaded in the proxy.
    assert tokens["firefox-esr"].count("JPKI (User Authentication PIN)") == 1


def test_chromium_logs_in_over_tls_1_2(stack, firefox):
    """Chromium (headless) with an AutoSelectCertificateForUrls policy, in a mount namespace of
    its own where the policy directory exists (the machine's /etc is not touched)."""
    user = stack.user
    nssdb = user.home / ".pki" / "nssdb"
    trusted = user.run("certutil", "-A", "-d", f"sql:{nssdb}", "-n", "mncd test CA", "-t",
                       "C,,", "-i", str(stack.pki / "ca.pem"))  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    etc = user.root / "etc-chromium"
    etc.mkdir()
    for item in Path("/etc/chromium").iterdir():
        if item.is_file():
            (etc / item.name).write_bytes(item.read_bytes())
    dialogs = len(stack.pinentry.descriptions())
    stack.commands(clear=True)
    with tls_server(stack, "tls1_2") as server:
        url = f"https://localhost:{server.port}/"
        policy = {"AutoSelectCertificateForUrls": [json.dumps({"pattern": url, "filter": {}})]}
        (etc / "policies" / "managed").mkdir(parents=True)
        (etc / "policies" / "managed" / "mncd-test.json").write_text(json.dumps(policy))
        chromium = user.command("chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                "--no-first-run", "--dump-dom", url, pcsc=True)  # fmt: skip
        script = (
            f"mount -t tmpfs tmpfs /etc/chromium && cp -r {etc}/. /etc/chromium/ && "
            + " ".join(f"'{part}'" for part in chromium)
        )
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script], capture_output=True, text=True, timeout=120)  # fmt: skip
    page = done.stdout  # the page as Chromium shows it (its DOM)
    assert "Client certificate" in page and "JPKI for user authentication" in page, (
        page[-2000:] + done.stderr[-2000:]
    )
    work = _card_work(stack.commands())
    assert work["sign"] >= 1 and work["read"] == 0 and work["signing key"] == 0, work
    new_dialogs = stack.pinentry.descriptions()[dialogs:]
    assert len(new_dialogs) == 1 and "/usr/lib/chromium/chromium" in new_dialogs[0], new_dialogs
    assert "prove who you are (log in)" in new_dialogs[0]
    log = stack.log()
    assert "PKCS#11 C_Sign with the auth key by /usr/lib/chromium/chromium" in log
    assert not re.search(r"chromium, process \d+ \(pkcs11-signing\)", log)


def _doctor_lines(stack: BrowserStack) -> dict[str, str]:
    done = stack.user.run(stack.user.python, "-m", "mncd.cli.main", "doctor", pcsc=True,
                          timeout=120)  # fmt: skip
    lines = {}
    for line in done.stdout.splitlines():
        _level, _, rest = line.partition(" ")
        lines[rest.strip().split(": ")[0]] = line
    return lines


def test_doctor_names_a_second_module_that_drives_the_card(stack, firefox):
    lines = _doctor_lines(stack)
    for check in ("PKCS#11 socket", "PKCS#11 module file", "other PKCS#11 modules",
                  "dialog's display"):  # fmt: skip
        assert lines[check].startswith("ok"), lines
    assert "(DISPLAY)" in lines["dialog's display"]
    override = stack.user.home / ".config" / "pkcs11" / "modules" / "opensc-pkcs11.module"
    text = override.read_text()
    override.unlink()  # OpenSC back in p11-kit's proxy, as before mncctl pkcs11 install
    try:
        line = _doctor_lines(stack)["other PKCS#11 modules"]
    finally:
        override.write_text(text)
        stack.user.own(override)
    assert line.startswith("FAIL"), line
    assert "OpenSC's module (/usr/share/p11-kit/modules/opensc-pkcs11.module)" in line
    assert f"{override} with disable-in: p11-kit-proxy" in line


def test_uninstall_removes_exactly_what_install_wrote(stack, firefox):
    """(Last: it undoes the module's set-up.)"""
    modules = stack.user.home / ".config" / "pkcs11" / "modules"
    foreign = modules / "somebody-else.module"
    foreign.write_text("module: /usr/lib/somebody-else.so\n")
    removed = stack.user.mncctl("pkcs11", "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert sorted(p.name for p in modules.iterdir()) == ["somebody-else.module"]
    assert f"removed {modules / 'opensc-pkcs11.module'}" in removed.stdout
    assert f"NSS database {firefox}: removed" in removed.stdout
    listed = stack.user.run("modutil", "-list", "-dbdir", f"sql:{firefox}")
    assert "My Number Card (mncd)" not in listed.stdout and "p11-kit-proxy" not in listed.stdout
