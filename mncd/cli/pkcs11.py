"""``mncctl pkcs11 install|uninstall``: make desktop applications reach the card through mncd.

``install`` writes p11-kit module files in ``~/.config/pkcs11/modules``:

- ``mncd.module``, whose ``remote:`` is the daemon's log-in socket (the user-authentication token
  alone): every program loading p11-kit's proxy (browsers, GnuTLS tools, OpenSSH) can log in with
  the card and never sees the signing token, so no browser asks for the signing password;
- ``mncd-signing.module``: the signing token, enabled only in document-signing programs
  (LibreOffice, Okular, pkcs11-tool, p11tool, and those given with ``--signing-program``);
- when OpenSC's module is installed and p11-kit's proxy loads it, an ``opensc-pkcs11.module``
  (named as the system's file) with ``disable-in: p11-kit-proxy``: otherwise OpenSC drives the
  card itself behind mncd's back, the card shows up twice and browsers never ask mncd to sign.

It registers p11-kit's proxy module in NSS databases with ``modutil``: each Firefox profile (in
``~/.mozilla``, ``~/.config/mozilla``, snap's and Flatpak's places) and Chromium's
``~/.pki/nssdb``, or the ``--nss`` directories given. ``uninstall`` removes what ``install``
wrote, and nothing else. No code of mncd runs inside those applications.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mncd.cli import p11kit
from mncd.cli.errors import ExitCode, SetupError
from mncd.cli.files import write_atomically
from mncd.cli.text import _, subcommand
from mncd.pkcs11.location import LOGIN, SIGNING, Door, address, socket_path

#: The name of the module in NSS databases and the marker of the files mncctl writes.
MODULE_NAME = "My Number Card (mncd)"
MODULE_FILE = "mncd.module"
SIGNING_MODULE_FILE = "mncd-signing.module"
MARKER = "# Written by mncctl pkcs11 install"
#: Programs that sign documents with the signing certificate (p11-kit's ``enable-in``).
SIGNING_PROGRAMS = ("soffice.bin", "okular", "pkcs11-tool", "p11tool")
#: Where Firefox keeps its profiles, under the home directory: its own, the XDG one of newer
#: releases, snap's and Flatpak's.
FIREFOX_PROFILES = (
    ".mozilla/firefox",
    ".config/mozilla/firefox",
    "snap/firefox/common/.mozilla/firefox",
    ".var/app/org.mozilla.firefox/.mozilla/firefox",
    ".var/app/org.mozilla.firefox/config/mozilla/firefox",
)
CHROMIUM_DB = ".pki/nssdb"
CHROMIUM_PROGRAMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROXY_CANDIDATES = ("/usr/lib/*/p11-kit-proxy.so", "/usr/lib64/p11-kit-proxy.so",
                    "/usr/lib/p11-kit-proxy.so")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "pkcs11", _("let PKCS#11 applications (browsers, ssh, GnuTLS) use the card via mncd"),
        _("Let browsers and other PKCS#11 applications use the card through mncd, with p11-kit's "
          "proxy module. The PIN is asked by mncd's own dialog when an application needs it."),
        "mncctl pkcs11 install", "mncctl pkcs11 uninstall",
    )  # fmt: skip
    actions = command.add_subparsers(dest="action", required=True, metavar=_("ACTION"))
    for name, text in (
        ("install", _("write the p11-kit module files and register them in NSS databases")),
        ("uninstall", _("remove the module files and NSS registrations install made")),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--nss", action="append", type=Path, metavar="DIR", default=None,
            help=_("an NSS database directory (repeatable; default: ~/.pki/nssdb and every "
                   "Firefox profile)"),
        )  # fmt: skip
        if name == "install":
            action.add_argument(
                "--signing-program", action="append", metavar="NAME", default=[],
                help=_("one more program that may sign documents with the signing certificate "
                       "(repeatable; its executable's name)"),
            )  # fmt: skip
        action.set_defaults(func=install if name == "install" else uninstall)


# -- module files -------------------------------------------------------------------------------


def module_file(name: str = MODULE_FILE) -> Path:
    """A file in p11-kit's per-user module directory (p11-kit reads it for users but root)."""
    return p11kit.user_dir() / name


def module_text(socket: Path) -> str:
    """``mncd.module``: the log-in token, for every program."""
    return (
        f"{MARKER}: PKCS#11 applications log in with the My Number Card through the mncd "
        "daemon (its user-authentication certificate only).\n"
        f"remote: {address(socket)}\n"
    )


def signing_module_text(socket: Path, programs: list[str]) -> str:
    """``mncd-signing.module``: the signing token, for document-signing programs only."""
    return (
        f"{MARKER}: programs that sign documents reach the My Number Card's signing "
        "certificate through the mncd daemon; browsers do not.\n"
        f"remote: {address(socket)}\n"
        f"enable-in: {', '.join(programs)}\n"
    )


def opensc_override_text() -> str:
    return (
        f"{MARKER}: the My Number Card is served by mncd; OpenSC's module is not loaded "
        "in p11-kit's proxy (browsers), where it would drive the card itself. Other programs "
        "still load it.\n"
        f"disable-in: {p11kit.PROXY}\n"
    )


@dataclass(frozen=True)
class OpenscOverride:
    """The user file that keeps OpenSC's module out of p11-kit's proxy, and whether it is due."""

    path: Path
    system_file: Path
    needed: bool  #: OpenSC is loaded in the proxy now
    ours: bool  #: the file is one mncctl wrote


def opensc_overrides(
    user: Path | None = None, system: tuple[Path, ...] = p11kit.SYSTEM_DIRS
) -> list[OpenscOverride]:
    """OpenSC's system module files and the user file that would override each."""
    found = []
    user = user or p11kit.user_dir()
    for config in p11kit.modules(user, system):
        if not config.is_opensc or config.system_file is None:
            continue
        path = user / config.system_file.name
        ours = path.exists() and _ours(path, opensc_override_text())
        needed = config.loaded_by(p11kit.PROXY) or ours
        found.append(OpenscOverride(path, config.system_file, needed, ours))
    return found


def _ours(path: Path, expected: str | None = None) -> bool:
    """Whether mncctl wrote ``path`` (and, with ``expected``, it still says exactly that)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return text == expected if expected is not None else MARKER in text


def _write_module(path: Path, text: str) -> None:
    if path.exists() and not _ours(path):
        raise SetupError(
            _("{path} exists and was not written by mncctl; not touched").format(path=path)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text.encode("utf-8"))


def _socket(door: Door) -> Path:
    socket = socket_path(door)
    if socket is None:
        raise SetupError(_("XDG_RUNTIME_DIR is not set: the daemon's socket has no place"))
    return socket


# -- NSS databases ------------------------------------------------------------------------------


def firefox_profiles(home: Path | None = None) -> list[Path]:
    """Every Firefox profile (a directory with cert9.db) in the places Firefox uses."""
    home = home or Path.home()
    found = []
    for place in FIREFOX_PROFILES:
        found += [Path(p).parent for p in sorted(glob.glob(str(home / place / "*" / "cert9.db")))]
    return found


def chromium_database(home: Path | None = None) -> Path | None:
    """Chromium's and Chrome's NSS database: when it exists, or a Chromium is installed (it
    is made then, as Chromium would at its first start)."""
    db = (home or Path.home()) / CHROMIUM_DB
    if (db / "cert9.db").exists():
        return db
    if any(shutil.which(program) for program in CHROMIUM_PROGRAMS):
        return db
    return None


def proxy_module() -> str:
    for pattern in PROXY_CANDIDATES:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise SetupError(_("p11-kit-proxy.so is missing: install Debian's p11-kit package"))


def _modutil(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("modutil") is None:
        raise SetupError(_("modutil is missing: install Debian's libnss3-tools package"))
    return subprocess.run(["modutil", *args, "-force"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def _registered(db: Path) -> bool:
    listed = _modutil("-dbdir", f"sql:{db}", "-list")
    if listed.returncode != 0:
        raise SetupError(
            _("modutil cannot read {db}: {error}").format(db=db, error=_last_line(listed))
        )
    return f"{MODULE_NAME}\n" in listed.stdout.replace("Name: ", "")


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def _register(db: Path, library: str) -> None:
    if not (db / "cert9.db").exists():
        db.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = _modutil("-create", "-dbdir", f"sql:{db}")
        if created.returncode != 0:
            raise SetupError(_("modutil could not create {db}: {error}").format(
                db=db, error=_last_line(created)))  # fmt: skip
    if _registered(db):
        print(_("NSS database {db}: already registered").format(db=db))
        return
    added = _modutil("-dbdir", f"sql:{db}", "-add", MODULE_NAME, "-libfile", library)
    if added.returncode != 0:
        raise SetupError(_("modutil could not register in {db}: {error}").format(
            db=db, error=_last_line(added)))  # fmt: skip
    print(_("NSS database {db}: registered p11-kit's proxy ({library})").format(
        db=db, library=library))  # fmt: skip


# -- the commands -------------------------------------------------------------------------------


def install(args: argparse.Namespace) -> int:
    login, signing = _socket(LOGIN), _socket(SIGNING)
    programs = list(dict.fromkeys([*SIGNING_PROGRAMS, *args.signing_program]))
    for name in programs:
        if not name or any(c in name for c in ",\n/"):
            raise SetupError(_("{name!r} is not a program name").format(name=name))
    targets = [
        (module_file(MODULE_FILE), module_text(login)),
        (module_file(SIGNING_MODULE_FILE), signing_module_text(signing, programs)),
    ]
    for path, _text in targets:  # refuse before anything is written
        if path.exists() and not _ours(path):
            raise SetupError(
                _("{path} exists and was not written by mncctl; not touched").format(path=path)
            )
    for path, text in targets:
        _write_module(path, text)
    print(_("p11-kit module file: {path} (the log-in token, for every program; remote: "
            "{remote})").format(path=targets[0][0], remote=address(login)))  # fmt: skip
    print(_("p11-kit module file: {path} (the signing token, only in: {programs})").format(
        path=targets[1][0], programs=", ".join(programs)))  # fmt: skip
    _keep_opensc_out()
    _register_everywhere(args.nss)
    return ExitCode.OK


def _keep_opensc_out() -> None:
    for override in opensc_overrides():
        if override.ours or not override.needed:
            if override.ours:
                print(_("OpenSC: {path} already keeps OpenSC's module out of p11-kit's "
                        "proxy").format(path=override.path))  # fmt: skip
            continue
        if override.path.exists():
            print(_("warning: OpenSC's module ({system}) is loaded in p11-kit's proxy too and "
                    "would drive the card itself; {path} is not mncctl's: add the line "
                    "'disable-in: {proxy}' to it").format(
                system=override.system_file, path=override.path, proxy=p11kit.PROXY))  # fmt: skip
            continue
        _write_module(override.path, opensc_override_text())
        print(_("OpenSC: wrote {path} (disable-in: {proxy}): browsers no longer load OpenSC's "
                "module ({system}), which would drive the card itself; other programs still "
                "do").format(path=override.path, proxy=p11kit.PROXY,
                             system=override.system_file))  # fmt: skip


def _register_everywhere(given: list[Path] | None) -> None:
    if given:
        databases = given
    else:
        profiles = firefox_profiles()
        if not profiles:
            print(_("no Firefox profile found (looked in {places}): start Firefox once, close "
                    "it, then run mncctl pkcs11 install again").format(
                places=", ".join(f"~/{p}" for p in FIREFOX_PROFILES)))  # fmt: skip
        chromium = chromium_database()
        if chromium is None:
            print(_("no Chromium or Chrome found (~/{db}): nothing registered for them").format(
                db=CHROMIUM_DB))  # fmt: skip
        databases = profiles + ([chromium] if chromium else [])
    if not databases:
        return
    library = proxy_module()
    for db in databases:
        _register(db, library)


def uninstall(args: argparse.Namespace) -> int:
    paths = [module_file(name) for name in (MODULE_FILE, SIGNING_MODULE_FILE)]
    for path in paths:  # refuse before anything is removed
        if path.exists() and not _ours(path):
            raise SetupError(_("{path} was not written by mncctl; not removed").format(path=path))
    for path in paths:
        if not path.exists():
            continue
        path.unlink()
        print(_("removed {path}").format(path=path))
    for override in opensc_overrides():
        if override.ours:
            override.path.unlink()
            print(_("removed {path}: p11-kit's proxy loads OpenSC's module again").format(
                path=override.path))  # fmt: skip
        elif override.path.exists() and _ours(override.path):
            print(_("{path} was changed since mncctl wrote it; not removed").format(
                path=override.path))  # fmt: skip
    databases = args.nss or [*firefox_profiles(), Path.home() / CHROMIUM_DB]
    for db in databases:
        if not (db / "cert9.db").exists() or not _registered(db):
            continue
        deleted = _modutil("-dbdir", f"sql:{db}", "-delete", MODULE_NAME)
        if deleted.returncode != 0:
            raise SetupError(_("modutil could not remove the module from {db}: {error}").format(
                db=db, error=_last_line(deleted)))  # fmt: skip
        print(_("NSS database {db}: removed").format(db=db))
    return ExitCode.OK
