"""``mncctl``: the command-line client of the mncd daemon (session bus).

mncctl status [--json]                        card, reader and certificate status
mncctl sign FILE [--hash H] [--output SIG]    detached signature with the signing certificate
mncctl auth [--challenge-file F] ...          authenticate a challenge and verify it locally
mncctl watch [--json]                         print signals and property changes until Ctrl-C

Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 daemon not reachable, 4 PIN problem,
5 cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import enum
import getpass
import hashlib
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbus_next import BusType, Message, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.errors import AuthError, InvalidAddressError

from mncd.card.digestinfo import HASHES
from mncd.card.pin import AUTH_PIN, SIGN_PASSWORD
from mncd.dbus.api import BUS_NAME, ERROR_PREFIX, INTERFACE, MAX_DATA, OBJECT_PATH

PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"

#: Files larger than the daemon accepts are hashed here and only the digest is sent.
MAX_SIGN_DATA = MAX_DATA
CHALLENGE_SIZE = 32

SIGN_PROMPT = "署名用電子証明書のパスワード (signing password, 6–16 A–Z/0–9): "
AUTH_PROMPT = "利用者証明用電子証明書の暗証番号 (authentication PIN, 4 digits): "
PIN_BLOCKED_HINT = (
    "The PIN is blocked: reset it at your municipal office (市区町村の窓口で再設定してください)."
)
PIN_REQUIRED_HINT = "Run mncctl in a terminal to be asked for it, or pass it with --pin-stdin."

CERTIFICATE_TITLES = {
    "auth": "利用者証明用電子証明書 (user authentication)",
    "sign": "署名用電子証明書 (signing)",
}
MAX_PIN_TRIES = {"auth": AUTH_PIN.max_tries, "sign": SIGN_PASSWORD.max_tries}

STATE_TEXT = {
    "pcsc-unavailable": "the smart-card service is not available (is pcscd running?)",
    "no-reader": "no card reader connected",
    "no-card": "no card in the reader",
    "card-present": "My Number Card present",
    "unknown-card": "the card in the reader is not a My Number Card",
}
TOKEN_TEXT = {
    "card": "My Number Card",
    "android": "Android smartphone (スマホ用電子証明書)",
    "iphone": "iPhone (スマホ用電子証明書)",
    "juki": "Basic Resident Register card (住基カード)",
    "unknown": "unknown",
}
CERTIFICATE_STATE_TEXT = {
    "valid": "valid",
    "expiring": "expiring soon: renew it at your municipal office (更新してください)",
    "expired": "expired (有効期限切れ)",
    "invalidated": "invalidated (失効)",
    "unknown": "unknown",
}
SOURCE_TEXT = {
    "card": "card",
    "cache": "cache (as last read from the card)",
    "none": "none",
}


class ExitCode(enum.IntEnum):
    """Process exit codes of mncctl."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    PIN = 4
    CANCELLED = 5


_PIN_ERRORS = frozenset({"PinFormat", "PinIncorrect", "PinBlocked", "PinRequired"})
# Replies of the bus (not the daemon) meaning the daemon is not running and could not be started.
_UNREACHABLE_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoServer",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.TimedOut",
    }
)
_UNREACHABLE_PREFIXES = ("org.freedesktop.DBus.Error.Spawn.", "org.freedesktop.systemd1.")


class DaemonError(Exception):
    """An error reply to a method call, from the daemon or from the bus."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(text or name)
        self.name = name
        self.text = text


class BusUnavailableError(Exception):
    """The session bus cannot be reached at all."""


class UsageError(Exception):
    """A mistake in the command line found after parsing (missing file, ...)."""


class PinInputError(Exception):
    """No usable PIN was given (empty line on standard input)."""


class CancelledByUserError(Exception):
    """The user gave up (Ctrl-C, end of input at a prompt)."""


class VerificationError(Exception):
    """A signature from the card does not verify against the certificate it came with."""


# ---------------------------------------------------------------------------------------------
# Plain functions: error mapping, conversions, formatting, verification (no bus needed)


def is_unreachable_error(name: str) -> bool:
    """Whether a D-Bus error name means the daemon is not running and could not be started."""
    return name in _UNREACHABLE_ERRORS or name.startswith(_UNREACHABLE_PREFIXES)


def exit_code_for_error(name: str) -> ExitCode:
    """The exit code for a D-Bus error reply."""
    if is_unreachable_error(name):
        return ExitCode.UNREACHABLE
    if name.startswith(ERROR_PREFIX):
        short = name.removeprefix(ERROR_PREFIX)
        if short in _PIN_ERRORS:
            return ExitCode.PIN
        if short == "Cancelled":
            return ExitCode.CANCELLED
    return ExitCode.FAILED


def error_lines(name: str, text: str) -> list[str]:
    """What the user reads (one line, sometimes a hint after it) for a D-Bus error reply."""
    if is_unreachable_error(name):
        detail = f": {text}" if text else f" ({name})"
        return [f"the mncd daemon is not running and could not be started{detail}"]
    if not name.startswith(ERROR_PREFIX):
        return [f"{text} ({name})" if text else name]
    short = name.removeprefix(ERROR_PREFIX)
    lines = [text or _split_camel(short)]
    if short == "PinBlocked":
        lines.append(PIN_BLOCKED_HINT)
    elif short == "PinRequired":
        lines.append(PIN_REQUIRED_HINT)
    return lines


def _split_camel(name: str) -> str:
    """``PinIncorrect`` -> ``pin incorrect``: a readable fallback when the text is empty."""
    words: list[str] = []
    for ch in name:
        if ch.isupper() and words:
            words.append(" ")
        words.append(ch.lower())
    return "".join(words)


def to_plain(value: Any) -> Any:
    """D-Bus values (Variants, dicts, lists, bytes) as JSON-ready Python values."""
    if isinstance(value, Variant):
        return to_plain(value.value)
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def status_json(status: Mapping[str, Any]) -> str:
    """The status as pretty JSON (Variants unwrapped, ints kept as ints)."""
    return json.dumps(to_plain(status), indent=2, ensure_ascii=False)


def format_date(timestamp: int, tz: dt.tzinfo | None = None) -> str:
    """A unix time as a date in ``tz`` (local time when None); ``unknown`` for 0."""
    if not timestamp:
        return "unknown"
    when = dt.datetime.fromtimestamp(timestamp, dt.UTC).astimezone(tz)
    return when.date().isoformat()


def format_days_left(days: int) -> str:
    """``123 days left``, ``expires today``, ``expired 4 days ago``."""
    if days > 1:
        return f"{days} days left"
    if days == 1:
        return "1 day left"
    if days == 0:
        return "expires today"
    if days == -1:
        return "expired 1 day ago"
    return f"expired {-days} days ago"


def format_pin_tries(tries: int, maximum: int) -> str:
    """``3/3``, ``0/5 (blocked)`` or ``unknown``."""
    if tries < 0:
        return "unknown"
    if tries == 0:
        return f"0/{maximum} (blocked: reset it at your municipal office)"
    return f"{tries}/{maximum}"


def _described(value: str, table: Mapping[str, str]) -> str:
    """``value (description)``, or the value alone when the description adds nothing."""
    text = table.get(value)
    if not value:
        return "unknown"
    if text is None or text == value:
        return value
    return f"{value} ({text})"


def format_certificate(
    which: str, cert: Mapping[str, Any], tz: dt.tzinfo | None = None
) -> list[str]:
    """Lines about one certificate of the status (``which`` is ``auth`` or ``sign``)."""
    lines = [CERTIFICATE_TITLES.get(which, which)]
    tries = _int(cert.get("pin_tries_left"), -1)
    pin_line = f"  {'PIN tries:':13} {format_pin_tries(tries, MAX_PIN_TRIES.get(which, 0))}"
    if not cert.get("present", False):
        lines.append(f"  {'Certificate:':13} not present")
        if tries >= 0:
            lines.append(pin_line)
        return lines
    not_after = _int(cert.get("not_after"), 0)
    expires = format_date(not_after, tz)
    if not_after:
        expires += f" ({format_days_left(_int(cert.get('days_left'), 0))})"
    state = str(cert.get("state", ""))
    fields = [
        ("State:", CERTIFICATE_STATE_TEXT.get(state, state) or "unknown"),
        ("Expires:", expires),
        ("Source:", SOURCE_TEXT.get(str(cert.get("source", "")), str(cert.get("source", "")))),
    ]
    lines += [f"  {label:13} {value}" for label, value in fields]
    lines.append(pin_line)
    for label, key in (
        ("Serial:", "serial"),
        ("Issuer:", "issuer"),
        ("Fingerprint:", "fingerprint"),
        ("Algorithm:", "algorithm"),
    ):
        value = str(cert.get(key, "") or "")
        if value:
            lines.append(f"  {label:13} {value}")
    return lines


def format_status(status: Mapping[str, Any], tz: dt.tzinfo | None = None) -> str:
    """The human-readable status table (``status`` may still hold Variants)."""
    status = to_plain(status)
    readers = [str(name) for name in status.get("readers", []) or []]
    lines = [
        f"{'State:':10} {_described(str(status.get('state', '')), STATE_TEXT)}",
        f"{'Reader:':10} {status.get('reader') or '(none)'}",
    ]
    if len(readers) > 1 or (readers and readers[0] != status.get("reader")):
        lines.append(f"{'Readers:':10} {', '.join(readers)}")
    token = str(status.get("token", "") or "")
    if token:
        lines.append(f"{'Token:':10} {_described(token, TOKEN_TEXT)}")
    for which in ("auth", "sign"):
        cert = status.get(which)
        if isinstance(cert, Mapping):
            lines.append("")
            lines += format_certificate(which, cert, tz)
    return "\n".join(lines)


def _int(value: Any, default: int) -> int:
    """``value`` if it is an int (not a bool), else ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def pin_tries_left(status: Mapping[str, Any], which: str) -> int:
    """Tries left of one certificate's PIN from a status, -1 when unknown."""
    cert = to_plain(status).get(which)
    return _int(cert.get("pin_tries_left"), -1) if isinstance(cert, Mapping) else -1


def tries_note(which: str, tries: int) -> str | None:
    """A warning to show before asking for a PIN with few tries left, else None."""
    if tries < 0 or tries >= MAX_PIN_TRIES.get(which, 0):
        return None
    if tries == 0:
        return PIN_BLOCKED_HINT
    if tries == 1:
        return "Only 1 try is left before the PIN is blocked (残り1回)."
    return f"{tries} tries are left before the PIN is blocked (残り{tries}回)."


def sign_options(
    pin: str | None, *, digest: bool = False, allow_last_try: bool = False
) -> dict[str, Variant]:
    """The a{sv} options of Sign."""
    options: dict[str, Variant] = {}
    if pin is not None:
        options["pin"] = Variant("s", pin)
    if digest:
        options["digest"] = Variant("b", True)
    if allow_last_try:
        options["allow-last-try"] = Variant("b", True)
    return options


def auth_options(
    hash_name: str, pin: str | None, *, allow_last_try: bool = False
) -> dict[str, Variant]:
    """The a{sv} options of Authenticate."""
    options = sign_options(pin, allow_last_try=allow_last_try)
    options["hash"] = Variant("s", hash_name)
    return options


def format_event(
    when: dt.datetime, name: str, args: list[Any] | dict[str, Any], *, as_json: bool = False
) -> str:
    """One line of ``mncctl watch``: timestamp, event name, arguments."""
    args = to_plain(args)
    stamp = when.isoformat(timespec="seconds")
    if as_json:
        return json.dumps({"time": stamp, "event": name, "args": args}, ensure_ascii=False)
    if isinstance(args, dict):
        rendered = [f"{key}={_json(value)}" for key, value in args.items()]
    else:
        rendered = [_json(value) for value in args]
    return " ".join([stamp, name, *rendered])


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def describe_signal(
    interface: str, member: str, body: list[Any]
) -> tuple[str, list[Any] | dict[str, Any]] | None:
    """The event name and arguments ``watch`` shows for a signal, or None to skip it."""
    if interface == INTERFACE:
        return member, list(body)
    if interface == PROPERTIES_INTERFACE and member == "PropertiesChanged" and len(body) >= 2:
        if body[0] != INTERFACE:
            return None
        changed: dict[str, Any] = dict(body[1])
        if len(body) > 2:
            for prop in body[2]:
                changed.setdefault(str(prop), "(invalidated)")
        return "PropertiesChanged", changed
    if member == "NameOwnerChanged" and len(body) == 3 and body[0] == BUS_NAME:
        return ("DaemonStopped" if not body[2] else "DaemonStarted"), []
    return None


def verify_signature(
    certificate: bytes, signature: bytes, data: bytes, hash_name: str, *, prehashed: bool = False
) -> bool:
    """Whether ``signature`` over ``data`` (or over a digest when ``prehashed``) verifies."""
    from mncd.card.digestinfo import digest
    from mncd.jpki.signatures import SignatureMismatch, verify

    try:
        verify(certificate, signature, hash_name, data if prehashed else digest(hash_name, data))
    except SignatureMismatch:
        return False
    except ValueError as exc:
        raise VerificationError("the daemon returned a certificate that cannot be read") from exc
    return True


def certificate_summary(certificate: bytes) -> str:
    """``serial 1A2B, expires 2029-05-31`` for a DER certificate (empty when unreadable)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(certificate)
    except ValueError:
        return ""
    expires = cert.not_valid_after_utc.astimezone().date().isoformat()
    return f"serial {cert.serial_number:X}, expires {expires}"


def in_desktop_session(env: Mapping[str, str] | None = None) -> bool:
    """Whether a graphical session is around, where the daemon's own PIN dialog can appear."""
    env = os.environ if env is None else env
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def read_pin(
    *,
    from_stdin: bool,
    prompt: str,
    stdin_is_tty: bool,
    note: Callable[[], str | None],
    desktop: bool = False,
) -> str | None:
    """The PIN to send: one line of stdin; None in a desktop session (the daemon asks the user
    itself, so the PIN never passes through mncctl); a no-echo prompt on a terminal; else None."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise PinInputError("--pin-stdin: standard input is empty, no PIN was given")
        pin = line.rstrip("\r\n")
        if not pin:
            raise PinInputError("--pin-stdin: the first line of standard input is empty")
        return pin
    if desktop or not stdin_is_tty:
        return None
    message = note()
    if message:
        print(message, file=sys.stderr)
    try:
        pin = getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)  # end the prompt's line
        raise CancelledByUserError("cancelled") from None
    if not pin:
        raise CancelledByUserError("no PIN entered: cancelled")
    return pin


# ---------------------------------------------------------------------------------------------
# The bus client


class Client:
    """Calls to the daemon over the session bus (no timeout: a person may be typing a PIN)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls) -> Client:
        """Connect to the session bus or raise :class:`BusUnavailableError`."""
        try:
            bus = await MessageBus(bus_type=BusType.SESSION).connect()
        except (InvalidAddressError, AuthError, OSError, KeyError, EOFError) as exc:
            detail = str(exc) or type(exc).__name__
            raise BusUnavailableError(f"cannot connect to the session bus: {detail}") from exc
        return cls(bus)

    async def close(self) -> None:
        """Leave the bus."""
        self.bus.disconnect()
        # After Ctrl-C the disconnect future may already be cancelled: nothing left to wait for.
        with suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.bus.wait_for_disconnect(), 2)

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        destination: str = BUS_NAME,
        path: str = OBJECT_PATH,
        interface: str = INTERFACE,
    ) -> list[Any]:
        """Call a method and return the reply's body, or raise :class:`DaemonError`."""
        message = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        try:
            reply = await self.bus.call(message)
        except (OSError, EOFError) as exc:
            raise BusUnavailableError(f"lost the connection to the session bus: {exc}") from exc
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise DaemonError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)
        return list(reply.body)

    async def get_status(self) -> dict[str, Any]:
        """GetStatus() -> a{sv}, Variants unwrapped."""
        (status,) = await self.call("GetStatus")
        return to_plain(status)

    async def sign(
        self, data: bytes, hash_name: str, options: dict[str, Variant]
    ) -> tuple[bytes, bytes]:
        """Sign(ay, s, a{sv}) -> (signature, certificate)."""
        signature, certificate = await self.call("Sign", "aysa{sv}", [data, hash_name, options])
        return bytes(signature), bytes(certificate)

    async def authenticate(
        self, challenge: bytes, options: dict[str, Variant]
    ) -> tuple[bytes, bytes]:
        """Authenticate(ay, a{sv}) -> (signature, certificate)."""
        signature, certificate = await self.call("Authenticate", "aya{sv}", [challenge, options])
        return bytes(signature), bytes(certificate)

    async def subscribe(self, emit: Callable[[str, list[Any] | dict[str, Any]], None]) -> None:
        """Report the daemon's signals and property changes through ``emit`` from now on."""
        rules = [
            f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{INTERFACE}'",
            f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',"
            f"interface='{PROPERTIES_INTERFACE}',member='PropertiesChanged',arg0='{INTERFACE}'",
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
        ]

        def handler(message: Message) -> None:
            if message.message_type != MessageType.SIGNAL:
                return
            if message.interface != "org.freedesktop.DBus" and message.path != OBJECT_PATH:
                return
            event = describe_signal(message.interface or "", message.member or "", message.body)
            if event is not None:
                emit(*event)

        self.bus.add_message_handler(handler)
        for rule in rules:
            await self.call(
                "AddMatch",
                "s",
                [rule],
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
            )

    async def wait_closed(self) -> None:
        """Return when the bus connection ends."""
        with suppress(Exception):
            await self.bus.wait_for_disconnect()


@contextmanager
def _session() -> Iterator[tuple[Callable[[Coroutine[Any, Any, Any]], Any], Client]]:
    """A connected client and a ``run(coroutine)`` for it.

    Synchronous code (the PIN prompt) runs between ``run`` calls, where Ctrl-C raises at once.
    """
    with asyncio.Runner() as runner:
        client = runner.run(Client.connect())
        try:
            yield runner.run, client
        finally:
            with suppress(Exception, asyncio.CancelledError):
                runner.run(client.close())


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_status(args: argparse.Namespace) -> int:
    with _session() as (run, client):
        status = run(client.get_status())
    print(status_json(status) if args.json else format_status(status))
    return ExitCode.OK


@dataclass(frozen=True)
class _Payload:
    """What Sign is given for a file: the data itself, or its digest."""

    data: bytes
    is_digest: bool


def _read_payload(path: Path, hash_name: str) -> _Payload:
    """The file's bytes, or its digest when it is larger than :data:`MAX_SIGN_DATA`."""
    try:
        with path.open("rb") as stream:
            head = stream.read(MAX_SIGN_DATA + 1)
            if len(head) <= MAX_SIGN_DATA:
                return _Payload(head, False)
            hasher = hashlib.new(hash_name, head)
            while chunk := stream.read(1024 * 1024):
                hasher.update(chunk)
            return _Payload(hasher.digest(), True)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _check_output(path: Path) -> None:
    """Refuse early an output path that cannot be written (before a PIN is typed)."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{path} is a directory")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: no such directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _obtain_pin(
    args: argparse.Namespace,
    which: str,
    prompt: str,
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    client: Client,
) -> str | None:
    def note() -> str | None:
        try:
            status = run(client.get_status())
        except DaemonError as exc:
            if is_unreachable_error(exc.name):
                raise
            return None
        return tries_note(which, pin_tries_left(status, which))

    return read_pin(
        from_stdin=args.pin_stdin,
        prompt=prompt,
        stdin_is_tty=sys.stdin.isatty(),
        note=note,
        desktop=in_desktop_session(),
    )


def cmd_sign(args: argparse.Namespace) -> int:
    source: Path = args.file
    sig_path: Path = args.output or Path(f"{source}.sig")
    crt_path: Path = args.cert_output or Path(f"{source}.crt")
    payload = _read_payload(source, args.hash)
    for path in (sig_path, crt_path):
        _check_output(path)
    with _session() as (run, client):
        pin = _obtain_pin(args, "sign", SIGN_PROMPT, run, client)
        options = sign_options(pin, digest=payload.is_digest, allow_last_try=args.allow_last_try)
        del pin
        signature, certificate = run(client.sign(payload.data, args.hash, options))
        options.clear()
    if not verify_signature(
        certificate, signature, payload.data, args.hash, prehashed=payload.is_digest
    ):
        raise VerificationError("the signature does not verify against the signing certificate")
    _write(sig_path, signature)
    _write(crt_path, certificate)
    how = f"{args.hash} digest computed locally" if payload.is_digest else args.hash
    print(f"signed {source} ({how})")
    print(f"signature:   {sig_path}")
    summary = certificate_summary(certificate)
    print(f"certificate: {crt_path}" + (f" ({summary})" if summary else ""))
    return ExitCode.OK


def cmd_auth(args: argparse.Namespace) -> int:
    if args.challenge_file is not None:
        try:
            challenge = args.challenge_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.challenge_file}: {exc.strerror or exc}") from exc
    else:
        challenge = os.urandom(CHALLENGE_SIZE)
    for path in (args.output, args.cert_output):
        if path is not None:
            _check_output(path)
    with _session() as (run, client):
        pin = _obtain_pin(args, "auth", AUTH_PROMPT, run, client)
        options = auth_options(args.hash, pin, allow_last_try=args.allow_last_try)
        del pin
        signature, certificate = run(client.authenticate(challenge, options))
        options.clear()
    origin = str(args.challenge_file) if args.challenge_file else f"random {CHALLENGE_SIZE} bytes"
    summary = certificate_summary(certificate)
    print(
        f"authentication signature made over the challenge ({origin}, {args.hash})"
        + (f" with the certificate of {summary}" if summary else "")
    )
    if args.output is not None:
        _write(args.output, signature)
        print(f"signature:   {args.output}")
    if args.cert_output is not None:
        _write(args.cert_output, certificate)
        print(f"certificate: {args.cert_output}")
    if not verify_signature(certificate, signature, challenge, args.hash):
        raise VerificationError(
            "the signature does not verify against the authentication certificate"
        )
    print("verified")
    return ExitCode.OK


def cmd_watch(args: argparse.Namespace) -> int:
    def emit(name: str, event_args: list[Any] | dict[str, Any]) -> None:
        now = dt.datetime.now().astimezone()
        print(format_event(now, name, event_args, as_json=args.json), flush=True)

    try:
        with _session() as (run, client):

            async def watch() -> None:
                await client.subscribe(emit)
                status = await client.get_status()
                readers = status.get("readers", [])
                emit("Status", {"state": status.get("state", ""), "readers": readers})
                await client.wait_closed()
                raise BusUnavailableError("lost the connection to the session bus")

            run(watch())
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK  # pragma: no cover (watch only ends by Ctrl-C or an error)


# ---------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of mncctl."""
    parser = argparse.ArgumentParser(
        prog="mncctl",
        description="Command-line client of mncd, the My Number Card (マイナンバーカード) daemon.",
        epilog="exit codes: 0 ok, 1 operation failed, 2 usage error, 3 daemon not reachable, "
        "4 PIN problem, 5 cancelled",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = sub.add_parser("status", help="show the card, reader and certificate status")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)

    def add_pin_args(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--hash", choices=HASHES, default="sha256", help="hash algorithm (default: sha256)"
        )
        command.add_argument(
            "--pin-stdin",
            action="store_true",
            help="read the PIN from the first line of standard input",
        )
        command.add_argument(
            "--allow-last-try",
            action="store_true",
            help="use the PIN even if only one try is left",
        )

    sign = sub.add_parser("sign", help="sign a file with the signing certificate (署名用)")
    sign.add_argument("file", type=Path, metavar="FILE", help="the file to sign")
    sign.add_argument("--output", "-o", type=Path, metavar="SIG", help="default: FILE.sig")
    sign.add_argument("--cert-output", type=Path, metavar="CRT", help="default: FILE.crt")
    add_pin_args(sign)
    sign.set_defaults(func=cmd_sign)

    auth = sub.add_parser(
        "auth", help="authenticate with the user authentication certificate (利用者証明用)"
    )
    auth.add_argument(
        "--challenge-file", type=Path, metavar="F", help="challenge (default: 32 random bytes)"
    )
    auth.add_argument("--output", "-o", type=Path, metavar="SIG", help="write the signature")
    auth.add_argument("--cert-output", type=Path, metavar="CRT", help="write the certificate")
    add_pin_args(auth)
    auth.set_defaults(func=cmd_auth)

    watch = sub.add_parser("watch", help="print the daemon's signals until Ctrl-C")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.set_defaults(func=cmd_watch)
    return parser


def _fail(code: int, *lines: str) -> int:
    for line in lines:
        print(f"mncctl: {line}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run mncctl and return its exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already explained by argparse
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        return int(args.func(args))
    except DaemonError as exc:
        return _fail(exit_code_for_error(exc.name), *error_lines(exc.name, exc.text))
    except BusUnavailableError as exc:
        return _fail(ExitCode.UNREACHABLE, str(exc))
    except UsageError as exc:
        return _fail(ExitCode.USAGE, str(exc))
    except PinInputError as exc:
        return _fail(ExitCode.PIN, str(exc))
    except (CancelledByUserError, KeyboardInterrupt) as exc:
        return _fail(ExitCode.CANCELLED, str(exc) or "cancelled")
    except (VerificationError, OSError) as exc:
        return _fail(ExitCode.FAILED, str(exc))
    except Exception as exc:  # a bug or a malformed reply: still no traceback for a person
        return _fail(ExitCode.FAILED, f"unexpected error: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
