"""The daemon on a private session bus, called by busctl and gdbus, with the real PC/SC stack."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from xml.etree import ElementTree

import pytest
from busstack import (
    BUS_NAME,
    INTERFACE,
    OBJECT_PATH,
    CallError,
    Daemon,
    PrivateBus,
    busctl,
    gdbus,
    gdbus_call,
    gvariant_bytes,
    name_has_owner,
    owner_pid,
    parse_gvariant_arrays,
    status,
    wait_for,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from dbus_next import Message, Variant
from dbus_next.aio import MessageBus
from faultkit import verifies_with_pin

ERR = "io.github.mncd.MyNumberCard1.Error."
PROPERTIES = "org.freedesktop.DBus.Properties"


@pytest.fixture
def bus(tmp_path):
    private = PrivateBus(tmp_path)
    yield private
    private.stop()


@pytest.fixture
def daemon(bus, sandbox, tmp_path):
    process = Daemon(bus, sandbox.env, tmp_path / "state").start()
    yield process
    process.stop()
    assert "Traceback" not in process.log


def wait_state(address: str, state: str) -> dict:
    """Poll GetStatus until ``state`` (for card-present: until the card has been read)."""

    def reached() -> dict | None:
        s = status(address)
        if s["state"] != state:
            return None
        if state == "card-present" and s["auth"]["source"] != "card":
            return None  # still being read
        return s

    return wait_for(reached, f"state {state}")


def verify(cert_der: bytes, signature: bytes, data: bytes, algorithm=None) -> None:
    key = x509.load_der_x509_certificate(cert_der).public_key()
    key.verify(signature, data, padding.PKCS1v15(), algorithm or hashes.SHA256())


def test_status_and_certificates_from_the_card(daemon, card):
    s = wait_state(daemon.bus.address, "card-present")
    certificates = card.certificates()
    assert s["reader"] == card.reader
    assert s["readers"] == ["Virtual PCD 00 00", "Virtual PCD 00 01"]
    assert s["token"] == "card"
    auth = s["auth"]
    assert auth["present"] and auth["source"] == "card" and auth["state"] == "valid"
    assert auth["fingerprint"] == hashlib.sha256(certificates["auth"]).hexdigest()
    assert auth["days_left"] == card.profile.not_after_days
    assert auth["pin_tries_left"] == 3 and auth["algorithm"] == "rsa2048"
    assert s["sign"]["present"] and s["sign"]["pin_tries_left"] == 5
    # The signing certificate's data is not known before its password, and never in status.
    assert s["sign"]["state"] == "unknown"
    text = json.dumps(s, ensure_ascii=False)
    for secret in (card.profile.name, card.profile.address, "19900401", "4199004"):
        assert secret not in text
    for which, key in (("auth", "auth"), ("auth-ca", "auth-ca"), ("sign-ca", "sign-ca")):
        assert (
            bytes(busctl(daemon.bus.address, "GetCertificate", "s", which)[0])
            == (certificates[key])
        )
    with pytest.raises(CallError) as err:
        gdbus_call(daemon.bus.address, "GetCertificate", "sign")
    assert ERR + "InvalidArgument" in err.value.message


def test_authenticate_with_busctl(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    challenge = b"login challenge 0123456789abcdef"
    signature, cert = busctl(
        daemon.bus.address, "Authenticate", "aya{sv}", str(len(challenge)),
        *map(str, challenge), "1", "pin", "s", card.profile.auth_pin,
    )  # fmt: skip
    assert bytes(cert) == card.certificates()["auth"]
    verify(bytes(cert), bytes(signature), challenge)
    assert "Authenticate requested by" in daemon.log


def test_sign_with_gdbus_then_status_knows_the_signing_certificate(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    document = b"a document to sign"
    result = gdbus(
        daemon.bus.address, "Sign", gvariant_bytes(document), "sha384",
        f"{{'pin': <'{card.profile.sign_password}'>}}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    signature, cert = parse_gvariant_arrays(result.stdout)
    assert cert == card.certificates()["sign"]
    verify(cert, signature, document, hashes.SHA384())
    assert "Sign requested by" in daemon.log and card.profile.sign_password not in daemon.log
    s = status(daemon.bus.address)
    assert s["sign"]["state"] == "valid"
    assert s["sign"]["fingerprint"] == hashlib.sha256(cert).hexdigest()
    # The cache holds the signing certificate's summary, never the certificate.
    cached = "".join(p.read_text() for p in (daemon.state_dir / "mncd" / "cards").glob("*.json"))
    assert s["sign"]["fingerprint"] in cached
    assert (
        card.profile.address not in cached
        and "der" not in json.loads(cached)["certificates"]["sign"]
    )


@pytest.mark.parametrize("option", ["'hash': <'sha512'>", "'colour': <'red'>"])
def test_sign_refuses_unknown_options_including_hash(daemon, card, option):
    wait_state(daemon.bus.address, "card-present")
    card.commands(clear=True)
    password = card.profile.sign_password
    with pytest.raises(CallError) as err:
        gdbus_call(
            daemon.bus.address, "Sign", gvariant_bytes(b"document"), "sha256",
            f"{{'pin': <'{password}'>, {option}}}",
        )  # fmt: skip
    assert ERR + "InvalidArgument" in err.value.message
    assert "unknown option" in err.value.message
    assert card.commands() == [] and password not in err.value.message
    # Authenticate keeps hash as an option (it has no hash argument).
    signature, cert = auth_call(daemon, card.profile.auth_pin, "sha512", b"challenge")
    verify(cert, signature, b"challenge", hashes.SHA512())


def test_removal_signals_and_status_from_cache(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    monitor = subprocess.Popen(
        ["gdbus", "monitor", "--address", daemon.bus.address, "--dest", BUS_NAME],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(monitor.stdout), daemon=True).start()
    try:
        wait_for(lambda: any("Monitoring signals" in line for line in lines), "gdbus monitor")
        card.remove()
        s = wait_state(daemon.bus.address, "no-card")
        assert s["auth"]["source"] == "cache" and s["auth"]["present"]
        assert s["auth"]["days_left"] == card.profile.not_after_days
        card.reinsert()
        wait_state(daemon.bus.address, "card-present")
        wait_for(lambda: any("CardInserted" in line for line in lines), "CardInserted")
    finally:
        monitor.terminate()
        monitor.wait()
    output = "".join(lines)
    assert f"CardRemoved ('{card.reader}',)" in output
    assert f"CardInserted ('{card.reader}',)" in output
    assert "'CardPresent': <false>" in output and "'State': <'no-card'>" in output


def test_cache_survives_a_restart(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    card.remove()
    wait_state(daemon.bus.address, "no-card")
    daemon.stop()
    daemon.start()
    s = wait_state(daemon.bus.address, "no-card")
    assert s["auth"]["source"] == "cache"
    assert s["auth"]["fingerprint"] == hashlib.sha256(card.certificates()["auth"]).hexdigest()
    mode = (daemon.state_dir / "mncd").stat().st_mode & 0o777
    files = list((daemon.state_dir / "mncd" / "cards").glob("*.json"))
    assert mode == 0o700 and files
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def auth_call(
    daemon,
    pin: str | None = None,
    hash_name: str = "sha256",
    data: bytes = b"x",
    allow_last_try: bool = False,
):
    """Authenticate through gdbus; returns (signature, certificate) or raises CallError."""
    options = [f"'hash': <'{hash_name}'>"]
    if allow_last_try:
        options.append("'allow-last-try': <true>")
    if pin is not None:
        options.append(f"'pin': <'{pin}'>")
    output = gdbus_call(
        daemon.bus.address, "Authenticate", gvariant_bytes(data), "{" + ", ".join(options) + "}"
    )
    return parse_gvariant_arrays(output)


@pytest.mark.parametrize(
    ("pin", "hash_name", "error"),
    [
        ("12345", "sha256", "PinFormat"),
        ("abcd", "sha256", "PinFormat"),
        (None, "sha256", "PinRequired"),
        ("1234", "md5", "InvalidArgument"),
    ],
)
def test_bad_input_is_refused_without_touching_the_card(daemon, card, pin, hash_name, error):
    wait_state(daemon.bus.address, "card-present")
    card.commands(clear=True)
    with pytest.raises(CallError) as err:
        auth_call(daemon, pin, hash_name)
    assert ERR + error in err.value.message
    assert card.commands() == []
    if pin:
        assert pin not in err.value.message


def test_wrong_pin_then_blocked(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    with pytest.raises(CallError) as err:
        auth_call(daemon, "9999")
    assert ERR + "PinIncorrect" in err.value.message and "2 tries left" in err.value.message
    assert status(daemon.bus.address)["auth"]["pin_tries_left"] == 2
    # The same wrong PIN again (a script that retries): refused without reaching the card.
    card.commands(clear=True)
    with pytest.raises(CallError) as err:
        auth_call(daemon, "9999")
    assert ERR + "PinIncorrect" in err.value.message and "2 tries left" in err.value.message
    assert verifies_with_pin(card.commands()) == 0 and card.tries()["auth"] == 2
    with pytest.raises(CallError):
        auth_call(daemon, "9998")
    # One try left: refused unless the caller explicitly allows using it.
    card.commands(clear=True)
    with pytest.raises(CallError) as err:
        auth_call(daemon, card.profile.auth_pin)
    assert ERR + "PinRequired" in err.value.message and "allow-last-try" in err.value.message
    # The gate read the live counter (an empty VERIFY) and sent no PIN.
    assert card.commands() == ["00A4040C0AD392F000260100000001", "00A4020C020018", "00200080"]
    with pytest.raises(CallError) as err:
        auth_call(daemon, "9997", allow_last_try=True)
    assert ERR + "PinBlocked" in err.value.message and "municipal office" in err.value.message
    assert status(daemon.bus.address)["auth"]["pin_tries_left"] == 0
    # Blocked: refused at once, the card is not asked again.
    card.commands(clear=True)
    with pytest.raises(CallError) as err:
        auth_call(daemon, card.profile.auth_pin, allow_last_try=True)
    assert ERR + "PinBlocked" in err.value.message
    assert card.commands() == []


def test_errors_no_card_removed_missing_and_unsupported(daemon, insert_card):
    wait_state(daemon.bus.address, "no-card")
    with pytest.raises(CallError) as err:
        auth_call(daemon, "1234")
    assert ERR + "NoCard" in err.value.message

    card = insert_card(sign_certificate=False)
    wait_state(daemon.bus.address, "card-present")
    assert status(daemon.bus.address)["sign"]["present"] is False
    with pytest.raises(CallError) as err:
        gdbus_call(daemon.bus.address, "Sign", gvariant_bytes(b"A"), "sha256",
                   "{'pin': <'ABC123'>}")  # fmt: skip
    assert ERR + "CertificateMissing" in err.value.message

    card.control.pull_on("802A", slot=card.slot)
    with pytest.raises(CallError) as err:
        auth_call(daemon, card.profile.auth_pin)
    assert ERR + "CardRemoved" in err.value.message
    wait_state(daemon.bus.address, "no-card")

    insert_card(token="android")
    wait_state(daemon.bus.address, "card-present")
    with pytest.raises(CallError) as err:
        auth_call(daemon, "1234")
    assert ERR + "NotSupported" in err.value.message


def test_unknown_card(daemon, insert_card):
    insert_card(jpki=False)
    wait_state(daemon.bus.address, "unknown-card")


def test_corrupt_signature_is_never_returned(daemon, insert_card):
    insert_card(corrupt_signature=True)
    wait_state(daemon.bus.address, "card-present")
    with pytest.raises(CallError) as err:
        auth_call(daemon, "1234")
    assert ERR + "CertificateInvalid" in err.value.message


def test_pcscd_gone_and_back(daemon, sandbox, card):
    wait_state(daemon.bus.address, "card-present")
    sandbox.pcscd("stop")
    try:
        wait_state(daemon.bus.address, "pcsc-unavailable")
        with pytest.raises(CallError) as err:
            auth_call(daemon, "1234")
        assert ERR + "PcscUnavailable" in err.value.message
    finally:
        sandbox.pcscd("start")
    wait_state(daemon.bus.address, "no-card")
    card.reinsert()
    wait_state(daemon.bus.address, "card-present")
    signature, cert = auth_call(daemon, card.profile.auth_pin)
    verify(bytes(cert), bytes(signature), b"x")


def test_a_hung_pcscd_at_start_is_told_not_guessed(bus, sandbox, card, tmp_path):
    """pcscd accepts connections and never answers: the daemon takes its name after the scan
    timeout saying pcsc-unavailable (not no-reader), and reads the card once pcscd answers."""
    sandbox.pcscd("freeze")
    daemon = None
    try:
        env = {**sandbox.env, "MNCD_SCAN_TIMEOUT": "1"}
        daemon = Daemon(bus, env, tmp_path / "state").start()
        assert status(bus.address)["state"] == "pcsc-unavailable"
    finally:
        sandbox.pcscd("thaw")
    try:
        wait_state(bus.address, "card-present")
    finally:
        daemon.stop()
    assert "pcscd did not answer within 1 s" in daemon.log


def test_dbus_activation_starts_the_daemon(tmp_path, sandbox, repo_root):
    shipped = (repo_root / "dbus" / f"{BUS_NAME}.service").read_text()
    assert f"Name={BUS_NAME}" in shipped and "SystemdService=mncd.service" in shipped
    services = tmp_path / "services"
    services.mkdir()
    (services / f"{BUS_NAME}.service").write_text(
        re.sub(r"(?m)^Exec=.*$", f"Exec={sys.executable} -m mncd.daemon", shipped)
    )
    env = {**os.environ, **sandbox.env, "XDG_STATE_HOME": str(tmp_path / "state")}
    private = PrivateBus(tmp_path, service_dirs=[services], env=env)
    try:
        assert not name_has_owner(private.address)
        s = status(private.address)  # the first call starts mncd
        assert s["state"] in ("no-card", "no-reader", "card-present")
        assert name_has_owner(private.address)
    finally:
        pid = owner_pid(private.address)
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not name_has_owner(private.address), "mncd to exit")
        private.stop()


def _interface_shape(xml: str) -> dict:
    """Methods (in-arg names and types, out types), signals, properties of the interface."""
    root = ElementTree.fromstring(xml)
    node = next(i for i in root.iter("interface") if i.get("name") == BUS_NAME)
    shape: dict = {}
    for m in node.iter("method"):
        args = m.findall("arg")
        shape[("method", m.get("name"))] = (
            [(a.get("name"), a.get("type")) for a in args if a.get("direction", "in") == "in"],
            [a.get("type") for a in args if a.get("direction") == "out"],
        )
    for s in node.iter("signal"):
        shape[("signal", s.get("name"))] = [a.get("type") for a in s.findall("arg")]
    for p in node.iter("property"):
        shape[("property", p.get("name"))] = (p.get("type"), p.get("access"))
    return shape


def test_shipped_introspection_matches_the_daemon(daemon, repo_root):
    exported = subprocess.run(
        ["gdbus", "introspect", "--address", daemon.bus.address, "--dest", BUS_NAME,
         "--object-path", "/io/github/mncd/MyNumberCard1", "--xml"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    shipped = (repo_root / "dbus" / f"{BUS_NAME}.xml").read_text()
    assert _interface_shape(shipped) == _interface_shape(exported)
    # grows only: ForgetCard, CertificateStates, ChangePin, GetPinStatus, GetSigningCertificate,
    # SignDigestInfo, ReadCardInfo
    assert len(_interface_shape(shipped)) == 18


def test_sd_notify_ready_status_and_watchdog(bus, sandbox, tmp_path):
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.settimeout(15)
    daemon = Daemon(bus, sandbox.env, tmp_path / "state")
    daemon.start(extra_env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"})
    try:
        messages = []
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(receiver.recv(4096).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=" in ready
        assert daemon.process is not None and daemon.stop() == 0
        stopping = receiver.recv(4096).decode()
        while "STOPPING=1" not in stopping:
            stopping = receiver.recv(4096).decode()
    finally:
        receiver.close()
        daemon.stop()


def held_by(pid: int, fd: int) -> bool:
    """Whether process ``pid`` holds the file that our ``fd`` is open on."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(f"/proc/{pid}/fd/{name}") == target:
                return True
    return False


def test_calls_carrying_descriptors_are_answered_and_the_descriptors_closed(daemon):
    """The daemon takes file descriptors (dbus-daemon refuses to pass them to a connection that
    did not ask for them), answers each call, and keeps none of them."""
    wait_state(daemon.bus.address, "no-card")
    read_end, write_end = os.pipe()
    calls = [
        ("GetStatus", "", []),  # descriptors that no argument names
        ("Authenticate", "aya{sv}", [b"challenge", {"pin": Variant("s", "1234")}]),
        ("Sign", "ayhsa{sv}", [b"document", 0, "sha256", {}]),  # of the wrong type
        ("Get", "ss", [INTERFACE, "State"]),
    ]

    async def send() -> list[tuple[str | None, bool]]:
        client = await MessageBus(bus_address=daemon.bus.address, negotiate_unix_fd=True).connect()
        answers = []
        try:
            for member, signature, body in calls:
                properties = member == "Get"
                answer = await client.call(
                    Message(destination=BUS_NAME, path=OBJECT_PATH, member=member,
                            interface=PROPERTIES if properties else INTERFACE,
                            signature=signature, body=body, unix_fds=[write_end])
                )  # fmt: skip
                answers.append((answer.error_name, held_by(daemon.process.pid, write_end)))
        finally:
            client.disconnect()
        return answers

    try:
        assert asyncio.run(send()) == [
            (None, False), (ERR + "NoCard", False), (ERR + "InvalidArgument", False), (None, False)
        ]  # fmt: skip
    finally:
        os.close(read_end)
        os.close(write_end)
    assert daemon.process.poll() is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["Sign", "ays", "1", "65", "sha256"], "Sign takes arguments (aysa{sv}), not (ays)"),
        (["Sign", "aysa{sv}", "1", "65", "sha256", "1", "pin", "u", "1234"],
         "option 'pin' must have type 's'"),
        (["GetStatus", "s", "now"], "GetStatus takes arguments (), not (s)"),
        (["Reset"], f'{INTERFACE}.Reset with signature "" could not be found'),
        ([PROPERTIES, "Get", "i", "5"],
         'properties interface doesn\'t have method "Get" with signature "i"'),
        ([PROPERTIES, "Set", "ssv", INTERFACE, "State", "s", "no-card"],
         "the property is readonly"),
        ([PROPERTIES, "GetAll", "s", ""], "empty interface string is not supported"),
        (["org.freedesktop.DBus.Introspectable", "Introspect", "s", "x"],
         'Introspect with signature "s" could not be found'),
        (["org.freedesktop.DBus.Peer", "Ping", "u", "1"],
         'Ping with signature "u" could not be found'),
    ],
)  # fmt: skip
def test_malformed_calls_are_answered_and_the_daemon_stays_up(daemon, args, error):
    """busctl sends exactly the types it is given; each call gets its error within busctl's
    timeout, no traceback is logged, and the daemon goes on answering."""
    wait_state(daemon.bus.address, "no-card")
    if not args[0].startswith("org."):
        args = [INTERFACE, *args]
    result = subprocess.run(
        ["busctl", f"--address={daemon.bus.address}", "--timeout=10", "call", BUS_NAME,
         OBJECT_PATH, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and error in result.stderr, result.stderr
    assert "Timeout" not in result.stderr and "Traceback" not in result.stderr
    assert "Traceback" not in daemon.log
    assert status(daemon.bus.address)["state"] == "no-card"
