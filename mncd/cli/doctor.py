"""``mncctl doctor``: is everything mncd needs in place? One line per check, with what to do.

It looks at each layer itself rather than asking the daemon, so it works when the daemon does
not: pcscd and its readers (PC/SC), USB readers udev sees that pcscd cannot drive, the card and
its JPKI application, the daemon on the session bus, its systemd user unit, a notification
server, and the configured pinentry program. It changes nothing and starts nothing.

Exit status 0 when everything needed works (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mncd.api import BUS_NAME
from mncd.card.errors import CardError, NoCardError, NotJpkiCardError, PcscUnavailableError
from mncd.card.jpki import JpkiSession, TokenKind
from mncd.card.pcsc import PcscContext
from mncd.cli import p11kit
from mncd.cli.errors import ExitCode, install_command
from mncd.cli.pkcs11 import MODULE_FILE
from mncd.cli.text import N_, Texts, _, subcommand
from mncd.client import BusError, BusUnavailable, CallTimeout, MyNumberCard
from mncd.config import Config, default_path
from mncd.daemon import udev
from mncd.pkcs11.location import LOGIN, address, socket_path

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
NOTIFICATIONS = "org.freedesktop.Notifications"
UNIT = "mncd.service"
#: Seconds the bus checks may take in all (a hung bus must not hang the doctor).
BUS_TIMEOUT = 15.0

#: Every text of ``mncctl doctor`` (English msgids, read back translated).
TEXT = Texts(
    {
        "name": {
            "pcscd": N_("pcscd"),
            "readers": N_("readers"),
            "usb-readers": N_("USB readers"),
            "card": N_("card"),
            "token": N_("token"),
            "daemon": N_("daemon (mncd)"),
            "unit": N_("user unit"),
            "notifications": N_("notifications"),
            "pinentry": N_("PIN dialog"),
            "settings": N_("settings"),
            "pkcs11-socket": N_("PKCS#11 socket"),
            "pkcs11-module": N_("PKCS#11 module file"),
            "pkcs11-others": N_("other PKCS#11 modules"),
            "display": N_("dialog's display"),
            "tls13": N_("TLS 1.3 log-in"),
            "browser": N_("browser bridge"),
        },
        "level": {OK: N_("ok"), WARN: N_("warn"), FAIL: N_("FAIL"), SKIP: N_("skip")},
        "pcscd-ok": N_("reachable"),
        "pcscd-fail": N_(
            "not reachable: install and start it: sudo apt install pcscd && sudo systemctl "
            "enable --now pcscd.socket"
        ),
        "pcscd-error": N_(
            "answers with an error ({error}): restart it: sudo systemctl restart pcscd"
        ),
        "no-pcscd": N_("not checked: pcscd is not reachable"),
        "readers-ok": N_("{readers}"),
        "readers-none": N_(
            "none: connect a reader: a CCID contact reader, or a CCID NFC reader such as "
            "Sony's RC-S300"
        ),
        "readers-none-ccid": N_(
            "none, though udev sees {names}: install pcscd's CCID driver and restart "
            "pcscd: sudo apt install libccid && sudo systemctl restart pcscd"
            ""
        ),
        "usb-ok": N_("none that pcscd cannot use"),
        "usb-unsupported": N_(
            "{name} is plugged in but is not a CCID reader, so pcscd cannot use it, "
            "and Debian packages no PC/SC driver for it: use a CCID reader instead, such as Sony's "
            "RC-S300 or a contact reader, which pcscd drives with the libccid package"
            ""
        ),
        "usb-unknown": N_("not checked: udev cannot be read here ({error})"),
        "card-ok": N_("a My Number Card in {reader} answers the JPKI application"),
        "card-none": N_("no card in the reader: insert your My Number Card to check it too"),
        "card-not-jpki": N_(
            "the card in {reader} has no JPKI application: it is not a My Number Card"
        ),
        "card-error": N_(
            "the card in {reader} does not answer properly ({error}): take it out, wipe its "
            "contacts or place it flat on the reader, and insert it again"
        ),
        "no-card": N_("not checked: no My Number Card"),
        "token-ok": N_("card"),
        "token-other": N_("{kind}: mncd serves only the My Number Card itself"),
        "token-unknown": N_("{label!r}: not a token mncd knows; it treats it as a card"),
        "daemon-running": N_("running; it sees: {state}"),
        "daemon-activatable": N_("not running; it starts when first used (D-Bus activation)"),
        "daemon-missing": N_("not running and not installed: run {command}"),
        "daemon-not-activatable": N_(
            "running, but nothing starts it on demand (no D-Bus activation file): run {command}"
        ),
        "no-bus": N_("no session bus ({error}): run mncctl inside your desktop session"),
        "bus-error": N_("the session bus did not answer ({error})"),
        "unit-ok": N_("installed: {path}"),
        "unit-missing": N_(
            "not installed: mncd still starts on demand through its D-Bus activation file; for "
            "systemd to run it (and keep its log), run {command}"
        ),
        "unit-and-activation-missing": N_(
            "not installed, nor is the D-Bus activation file: nothing starts mncd; run {command}"
        ),
        "notify-running": N_("a notification server is on the bus"),
        "notify-activatable": N_("a notification server starts when needed"),
        "notify-missing": N_(
            "no notification server on the bus: expiry and other notices cannot be "
            "shown; desktops bring one, or install one such as dunst"
        ),
        "pinentry-ok": N_("{program} ({path})"),
        "pinentry-terminal": N_(
            "{program} ({path}) asks only on a terminal: in your desktop session no PIN dialog "
            "can be shown (mncctl then asks in its own terminal; other programs cannot use the "
            "card's PINs). Install one that shows a window, e.g. sudo apt install "
            'pinentry-gnome3, and set [pinentry] program = "pinentry-gnome3" in {config}'
        ),
        "pinentry-terminal-ok": N_(
            "{program} ({path}): asks on the terminal (no desktop session here)"
        ),
        "pinentry-missing": N_(
            "{program} (set in {config}) is not installed: install it, e.g. sudo apt "
            "install pinentry-gnome3, or set [pinentry] program in {config}"
        ),
        "settings-ok": N_("{path}: every setting applies"),
        "settings-none": N_("no settings file ({path}): the defaults apply"),
        "settings-problems": N_("{path}: {problems}; the rest applies, fix or remove these"),
        "summary-ok": N_("Everything mncd needs works."),
        "summary-fail": N_("{count} problem(s) to fix, above."),
    }
)
STATE_TEXT = Texts(
    {
        "pcsc-unavailable": N_("pcscd not available"),
        "no-reader": N_("no reader"),
        "no-card": N_("no card"),
        "reading": N_("a card being read"),
        "card-present": N_("a My Number Card"),
        "unknown-card": N_("a card that is not a My Number Card"),
        "unreadable-card": N_("a card that cannot be read"),
    }
)


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``level`` ok, warn, fail or skip, and the line's text."""

    check: str
    level: str
    text: str


# -- PC/SC, udev and the card -------------------------------------------------------------------


@dataclass
class PcscFacts:
    available: bool = False
    readers: tuple[str, ...] = ()


def check_pcsc() -> tuple[list[Finding], PcscFacts]:
    """pcscd reachable, and its readers."""
    try:
        with PcscContext() as context:
            readers = tuple(context.list_readers())
    except PcscUnavailableError:
        return [Finding("pcscd", FAIL, TEXT["pcscd-fail"])], PcscFacts()
    except CardError as exc:
        return [Finding("pcscd", FAIL, TEXT["pcscd-error"].format(error=exc))], PcscFacts()
    return [Finding("pcscd", OK, TEXT["pcscd-ok"])], PcscFacts(True, readers)


def check_readers(pcsc: PcscFacts, usb: list[udev.ReaderDevice] | None) -> list[Finding]:
    """The readers pcscd lists, and USB readers udev sees that pcscd cannot drive."""
    findings: list[Finding] = []
    if not pcsc.available:
        findings.append(Finding("readers", SKIP, TEXT["no-pcscd"]))
    elif pcsc.readers:
        findings.append(
            Finding("readers", OK, TEXT["readers-ok"].format(readers=", ".join(pcsc.readers)))
        )
    else:
        ccid = sorted({d.name for d in usb or () if d.ccid})
        text = (
            TEXT["readers-none-ccid"].format(names=", ".join(ccid))
            if ccid
            else TEXT["readers-none"]
        )
        findings.append(Finding("readers", FAIL, text))
    if usb is None:
        return findings
    unsupported = sorted({d.name for d in usb if not d.ccid})
    # A reader pcscd cannot use is the problem when it is the only one; else a warning.
    level = WARN if pcsc.readers else FAIL
    findings += [
        Finding("usb-readers", level, TEXT["usb-unsupported"].format(name=name))
        for name in unsupported
    ]
    if not unsupported:
        findings.append(Finding("usb-readers", OK, TEXT["usb-ok"]))
    return findings


def usb_readers() -> tuple[list[udev.ReaderDevice] | None, str]:
    """USB readers udev knows, or None and why when udev cannot be read."""
    try:
        return udev.list_readers(), ""
    except Exception as exc:  # no libudev, no /sys: the doctor reports it and goes on
        return None, str(exc) or type(exc).__name__


def check_card(pcsc: PcscFacts) -> list[Finding]:
    """The first card that answers in pcscd's readers: its JPKI application and token kind."""
    if not pcsc.available or not pcsc.readers:
        return [Finding("card", SKIP, TEXT["no-pcscd" if not pcsc.available else "card-none"])]
    problems: list[Finding] = []
    try:
        with PcscContext() as context:
            for reader in pcsc.readers:
                try:
                    with context.connect(reader) as conn, conn.transaction():
                        session = JpkiSession(conn)
                        session.select_application()
                        token = session.read_token_info()
                except NoCardError:
                    continue
                except NotJpkiCardError:
                    problems.append(
                        Finding("card", FAIL, TEXT["card-not-jpki"].format(reader=reader))
                    )
                    continue
                except CardError as exc:
                    problems.append(
                        Finding("card", FAIL, TEXT["card-error"].format(reader=reader, error=exc))
                    )
                    continue
                return [Finding("card", OK, TEXT["card-ok"].format(reader=reader)), _token(token)]
    except CardError as exc:
        return [Finding("card", FAIL, TEXT["pcscd-error"].format(error=exc))]
    if problems:
        return problems
    return [Finding("card", WARN, TEXT["card-none"]), Finding("token", SKIP, TEXT["no-card"])]


def _token(token: object) -> Finding:
    kind = getattr(token, "kind", TokenKind.UNKNOWN)
    if kind is TokenKind.CARD:
        return Finding("token", OK, TEXT["token-ok"])
    if kind is TokenKind.UNKNOWN:
        return Finding(
            "token", WARN, TEXT["token-unknown"].format(label=getattr(token, "label", ""))
        )
    return Finding("token", FAIL, TEXT["token-other"].format(kind=kind.value))


# -- the session bus ----------------------------------------------------------------------------


async def check_bus() -> list[Finding]:
    """The daemon (running or activatable) and a notification server."""
    try:
        card = await MyNumberCard.connect()
    except BusUnavailable as exc:
        return [
            Finding("daemon", FAIL, TEXT["no-bus"].format(error=exc)),
            Finding("notifications", SKIP, TEXT["no-bus"].format(error=exc)),
        ]
    try:
        activatable = set(await card.activatable_names())
        if await card.name_has_owner(BUS_NAME):
            state = (await card.get_status()).state
            daemon = Finding(
                "daemon", OK, TEXT["daemon-running"].format(state=STATE_TEXT.get(state, state))
            )
        elif BUS_NAME in activatable:
            daemon = Finding("daemon", OK, TEXT["daemon-activatable"])
        else:
            daemon = Finding(
                "daemon", FAIL, TEXT["daemon-missing"].format(command=install_command())
            )
        if daemon.level == OK and BUS_NAME not in activatable:
            text = TEXT["daemon-not-activatable"].format(command=install_command())
            daemon = Finding("daemon", WARN, text)
        if await card.name_has_owner(NOTIFICATIONS):
            notify = Finding("notifications", OK, TEXT["notify-running"])
        elif NOTIFICATIONS in activatable:
            notify = Finding("notifications", OK, TEXT["notify-activatable"])
        else:
            notify = Finding("notifications", WARN, TEXT["notify-missing"])
        return [daemon, notify]
    except (BusError, BusUnavailable, CallTimeout) as exc:
        return [Finding("daemon", FAIL, TEXT["bus-error"].format(error=exc))]
    finally:
        await card.close()


def bus_findings() -> list[Finding]:
    async def bounded() -> list[Finding]:
        return await asyncio.wait_for(check_bus(), BUS_TIMEOUT)

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        return [Finding("daemon", FAIL, TEXT["bus-error"].format(error="no answer"))]


# -- files --------------------------------------------------------------------------------------


def unit_paths(env: dict[str, str] | None = None) -> list[Path]:
    """Where systemd looks for user units, the user's own first."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return [
        config / "systemd" / "user",
        Path("/etc/systemd/user"),
        data / "systemd" / "user",
        Path("/usr/local/lib/systemd/user"),
        Path("/usr/lib/systemd/user"),
    ]


def activation_paths(env: dict[str, str] | None = None) -> list[Path]:
    """Where the session bus looks for activation files: the user's own, then the system's."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    system = (env.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share").split(":")
    return [Path(d) / "dbus-1" / "services" for d in [str(data), *system] if d]


def check_unit(env: dict[str, str] | None = None) -> Finding:
    for directory in unit_paths(env):
        path = directory / UNIT
        if path.is_file():
            return Finding("unit", OK, TEXT["unit-ok"].format(path=path))
    activation = [d / f"{BUS_NAME}.service" for d in activation_paths(env)]
    key = "unit-missing" if any(path.is_file() for path in activation) else (
        "unit-and-activation-missing")  # fmt: skip
    return Finding("unit", WARN, TEXT[key].format(command=install_command()))


def check_settings(config: Config | None = None) -> Finding:
    """The settings file: every key the daemon skipped (it keeps that key's default)."""
    config = config or Config.load(quiet=True)
    path = config.path or default_path()
    if config.problems:
        text = TEXT["settings-problems"].format(path=path, problems="; ".join(config.problems))
        return Finding("settings", WARN, text)
    if not path.exists():
        return Finding("settings", OK, TEXT["settings-none"].format(path=path))
    return Finding("settings", OK, TEXT["settings-ok"].format(path=path))


#: pinentry programs that can only ask on a terminal (no window), by their file's name.
TERMINAL_PINENTRIES = frozenset({"pinentry-curses", "pinentry-tty"})


def check_pinentry(
    which: Callable[[str], str | None] = shutil.which, env: dict[str, str] | None = None
) -> Finding:
    """The configured pinentry: installed, and able to show a window in a desktop session
    (``pinentry`` is Debian's alternative: the program it points to counts)."""
    from mncd.cli.pin import in_desktop_session

    program = Config.load(quiet=True).pinentry
    path = which(program)
    if path is None:
        return Finding(
            "pinentry",
            FAIL,
            TEXT["pinentry-missing"].format(program=program, config=default_path()),
        )
    real = os.path.realpath(path)
    shown = program if os.path.basename(real) == program else f"{program} → {real}"
    if os.path.basename(real) in TERMINAL_PINENTRIES:
        if in_desktop_session(env):
            text = TEXT["pinentry-terminal"].format(program=shown, path=path, config=default_path())
            return Finding("pinentry", WARN, text)
        return Finding(
            "pinentry", OK, TEXT["pinentry-terminal-ok"].format(program=shown, path=path)
        )
    return Finding("pinentry", OK, TEXT["pinentry-ok"].format(program=shown, path=path))


# -- PKCS#11 and the daemon's dialog ------------------------------------------------------------

PKCS11_TEXT = Texts(
    {
        "socket-ok": N_("served at {path}"),
        "socket-missing": N_(
            "not served at {path}: mncd serves it while it runs (it starts when first used; "
            "[pkcs11] enabled = false in the settings turns it off)"
        ),
        "socket-no-runtime": N_("XDG_RUNTIME_DIR is not set: run mncctl in your desktop session"),
        "module-ok": N_("{path}: p11-kit's proxy (browsers, ssh, GnuTLS) reaches mncd"),
        "module-missing": N_(
            "not installed: browsers and other PKCS#11 programs do not see the card; run "
            "mncctl pkcs11 install"
        ),
        "module-stale": N_(
            "{path} points at {found}, not {expected}: run mncctl pkcs11 install again"
        ),
        "others-ok": N_("no other module of p11-kit's proxy drives the card"),
        "others-opensc": N_(
            "OpenSC's module ({path}) is loaded in p11-kit's proxy too: it drives the card "
            "itself, browsers see it twice and their log-in hangs; run mncctl pkcs11 install "
            "(it writes {override} with disable-in: p11-kit-proxy)"
        ),
        "others-card": N_(
            "the module {name} also sees the card (token {token!r}) in p11-kit's proxy: "
            "browsers see it twice; keep it out of the proxy with disable-in: p11-kit-proxy in "
            "{override}"
        ),
        "display-ok": N_("mncd can show its PIN dialog ({variables})"),
        "display-missing": N_(
            "mncd runs without DISPLAY or WAYLAND_DISPLAY, so it cannot show its PIN dialog and "
            "applications get an error instead: run systemctl --user import-environment DISPLAY "
            "WAYLAND_DISPLAY, then systemctl --user restart mncd (or your desktop's own way to "
            "give user services its display)"
        ),
        "display-unknown": N_("not checked: mncd is not running"),
        "tls13": N_(
            "not possible with RSA cards (today's): TLS 1.3 needs RSA-PSS signatures, which the "
            "card cannot make; mncd says so to applications before any PIN is asked, and log-ins "
            "work where the server allows TLS 1.2"
        ),
    }
)
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "GPG_TTY")
#: p11-kit's own modules, which hold no card.
TRUST_MODULES = ("p11-kit-trust",)


def pkcs11_findings() -> list[Finding]:
    """The PKCS#11 door: its socket, the module file, other modules, the dialog's display."""
    socket_finding, daemon_pid = check_pkcs11_socket()
    findings = [socket_finding, check_pkcs11_module()]
    if p11kit.user_dir().joinpath(MODULE_FILE).exists():
        findings.append(check_other_modules())
    findings.append(check_display(daemon_pid))
    findings.append(Finding("tls13", OK, PKCS11_TEXT["tls13"]))
    return findings


def check_pkcs11_socket() -> tuple[Finding, int | None]:
    """Whether the daemon answers on its log-in socket, and its pid (the socket's peer)."""
    path = socket_path(LOGIN)
    if path is None:
        return Finding("pkcs11-socket", WARN, PKCS11_TEXT["socket-no-runtime"]), None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
            pid = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                       12))[0]  # fmt: skip
        except OSError:
            return Finding("pkcs11-socket", WARN,
                           PKCS11_TEXT["socket-missing"].format(path=path)), None  # fmt: skip
    return Finding("pkcs11-socket", OK, PKCS11_TEXT["socket-ok"].format(path=path)), pid


def check_pkcs11_module() -> Finding:
    """``mncd.module``: present, and pointing at this session's socket."""
    path = p11kit.user_dir() / MODULE_FILE
    if not path.exists():
        return Finding("pkcs11-module", WARN, PKCS11_TEXT["module-missing"])
    found = p11kit.parse(path.read_text(errors="replace")).get("remote", "")
    expected_path = socket_path(LOGIN)
    expected = address(expected_path) if expected_path else ""
    if expected and found != expected:
        text = PKCS11_TEXT["module-stale"].format(path=path, found=found, expected=expected)
        return Finding("pkcs11-module", WARN, text)
    return Finding("pkcs11-module", OK, PKCS11_TEXT["module-ok"].format(path=path))


def check_other_modules(listing: str | None = None) -> Finding:
    """A second module in p11-kit's proxy that drives the card (OpenSC's, above all)."""
    configs = {c.name: c for c in p11kit.modules()}
    for config in configs.values():
        if config.is_opensc and config.loaded_by(p11kit.PROXY):
            override = p11kit.user_dir() / f"{config.name}.module"
            text = PKCS11_TEXT["others-opensc"].format(
                path=config.system_file or config.user_file, override=override
            )
            return Finding("pkcs11-others", FAIL, text)
    others = [c for c in configs.values() if c.loaded_by(p11kit.PROXY)
              and not c.name.startswith("mncd") and c.name not in TRUST_MODULES]  # fmt: skip
    if listing is None:
        # Listing drives every module's card reader: only when one could see the card.
        listing = _list_modules() if others else ""
    for name, token in _card_tokens(listing):
        config = configs.get(name)
        if name.startswith("mncd") or (config and not config.loaded_by(p11kit.PROXY)):
            continue
        override = p11kit.user_dir() / f"{name}.module"
        text = PKCS11_TEXT["others-card"].format(name=name, token=token, override=override)
        return Finding("pkcs11-others", FAIL, text)
    return Finding("pkcs11-others", OK, PKCS11_TEXT["others-ok"])


def _list_modules() -> str:
    """``p11-kit list-modules``: every module p11-kit loads and its tokens ("" if it fails)."""
    if shutil.which("p11-kit") is None:
        return ""
    try:
        done = subprocess.run(["p11-kit", "list-modules"], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def _card_tokens(listing: str) -> list[tuple[str, str]]:
    """(module, token label) of every JPKI token in a ``p11-kit list-modules`` listing."""
    found, module = [], ""
    for line in listing.splitlines():
        if line and not line[0].isspace() and ":" in line:
            module = line.split(":", 1)[0]
        elif line.strip().startswith("token:"):
            label = line.split(":", 1)[1].strip()
            if "JPKI" in label:
                found.append((module, label))
    return found


def check_display(daemon_pid: int | None) -> Finding:
    """Whether the running daemon has a display (or terminal) to show its PIN dialog on."""
    if daemon_pid is None:
        return Finding("display", SKIP, PKCS11_TEXT["display-unknown"])
    try:
        raw = Path(f"/proc/{daemon_pid}/environ").read_bytes()
    except OSError:
        return Finding("display", SKIP, PKCS11_TEXT["display-unknown"])
    environment = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    present = [name for name in DISPLAY_VARIABLES if environment.get(name.encode())]
    if not present:
        return Finding("display", FAIL, PKCS11_TEXT["display-missing"])
    return Finding("display", OK, PKCS11_TEXT["display-ok"].format(variables=", ".join(present)))


def check_browser_bridge(home: Path | None = None) -> Finding | None:
    """The browser bridge, once it is installed (``mncctl browser install``): whether each
    browser's host manifest names a working host for the bridge's extension. None when it
    was never installed (it is optional)."""
    from mncd.cli import browser

    problems = {loc.browser: browser.problem(loc) for loc in browser.locations(home=home)}
    installed = {name: problem for name, problem in problems.items() if problem != "missing"}
    if not installed:
        return None
    sandboxed = browser.sandboxed_browsers(home)
    broken = {name: problem for name, problem in installed.items() if problem is not None}
    if broken:
        text = "; ".join(f"{name}: {_(browser.PROBLEMS[problem])}"
                         for name, problem in broken.items())  # fmt: skip
        return Finding("browser", WARN, text)
    text = _("host installed for {browsers}").format(browsers=", ".join(installed))
    if sandboxed:
        text += "; " + _("{browsers} cannot start it (sandboxed)").format(
            browsers=", ".join(sandboxed)
        )
        return Finding("browser", WARN, text)
    return Finding("browser", OK, text)


# -- the command --------------------------------------------------------------------------------


def diagnose() -> list[Finding]:
    """Every check, in the order the layers stack up."""
    findings, pcsc = check_pcsc()
    usb, error = usb_readers()
    findings += check_readers(pcsc, usb)
    if usb is None:
        findings.append(Finding("usb-readers", SKIP, TEXT["usb-unknown"].format(error=error)))
    findings += check_card(pcsc)
    bus = bus_findings()
    findings += [f for f in bus if f.check == "daemon"]
    findings.append(check_unit())
    findings += [f for f in bus if f.check != "daemon"]
    findings.append(check_settings())
    findings.append(check_pinentry())
    findings += pkcs11_findings()
    bridge = check_browser_bridge()
    if bridge is not None:
        findings.append(bridge)
    return findings


def format_finding(finding: Finding) -> str:
    level = TEXT["level"][finding.level]
    return f"{level:5} {TEXT['name'][finding.check]}: {finding.text}"


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "doctor", _("check the reader, pcscd, the card and the daemon"),
        _("Check everything mncd needs, one line each with what to do: pcscd, the readers, the "
          "card, the daemon, its user unit, notifications, the settings file and the PIN dialog. "
          "Changes nothing and needs no PIN."),
        "mncctl doctor", "mncctl doctor --json",
    )  # fmt: skip
    command.add_argument("--json", action="store_true", help=_("print the findings as JSON"))
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    findings = diagnose()
    failed = [f for f in findings if f.level == FAIL]
    if args.json:
        print(
            json.dumps(
                {"ok": not failed, "findings": [asdict(f) for f in findings]},
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for finding in findings:
            print(format_finding(finding))
        print(TEXT["summary-fail"].format(count=len(failed)) if failed else TEXT["summary-ok"])
    return ExitCode.FAILED if failed else ExitCode.OK
