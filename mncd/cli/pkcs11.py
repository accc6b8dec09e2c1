"""``mncctl pkcs11 install|uninstall``: make desktop applications reach the card through mncd.

``install`` writes the p11-kit module file ``~/.config/pkcs11/modules/mncd.module``, whose
``remote:`` names the daemon's socket: every program that loads p11-kit's proxy (GnuTLS tools,
the OpenSSL pkcs11 engine, ``p11tool``) then sees the card's tokens. It also registers p11-kit's
proxy module in NSS databases (``~/.pki/nssdb`` for Chromium, each Firefox profile, or the
``--nss`` directories given) with ``modutil``. ``uninstall`` removes both. No code of mncd runs
inside those applications: they load Debian's p11-kit modules.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
from pathlib import Path

from mncd.cli.errors import ExitCode, SetupError
from mncd.cli.files import write_atomically
from mncd.cli.text import _, subcommand
from mncd.pkcs11.location import address, socket_path

#: The name of the module in NSS databases and the marker of the module file.
MODULE_NAME = "My Number Card (mncd)"
MODULE_FILE = "mncd.module"
MARKER = "# Written by mncctl pkcs11 install"
FIREFOX_PROFILES = (
    ".mozilla/firefox/*/cert9.db",
    "snap/firefox/common/.mozilla/firefox/*/cert9.db",
)
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
        ("install", _("write the p11-kit module file and register it in NSS databases")),
        ("uninstall", _("remove the module file and the NSS registrations")),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--nss", action="append", type=Path, metavar="DIR", default=None,
            help=_("an NSS database directory (repeatable; default: ~/.pki/nssdb and every "
                   "Firefox profile)"),
        )  # fmt: skip
        action.set_defaults(func=install if name == "install" else uninstall)


def module_file() -> Path:
    """p11-kit's per-user module directory (p11-kit reads it for users other than root)."""
    return Path.home() / ".config" / "pkcs11" / "modules" / MODULE_FILE


def module_text(socket: Path) -> str:
    return (
        f"{MARKER}: PKCS#11 applications reach the My Number Card through the mncd daemon.\n"
        f"remote: {address(socket)}\n"
    )


def nss_databases(given: list[Path] | None) -> list[Path]:
    """The NSS databases to change: those given, else Chromium's and each Firefox profile's."""
    if given:
        return given
    home = Path.home()
    found = [home / ".pki" / "nssdb"]
    for pattern in FIREFOX_PROFILES:
        found += [Path(p).parent for p in sorted(glob.glob(str(home / pattern)))]
    return [db for db in found if (db / "cert9.db").exists()]


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


def install(args: argparse.Namespace) -> int:
    socket = socket_path()
    if socket is None:
        raise SetupError(_("XDG_RUNTIME_DIR is not set: the daemon's socket has no place"))
    path = module_file()
    if path.exists() and MARKER not in path.read_text(errors="replace"):
        raise SetupError(
            _("{path} exists and was not written by mncctl; not touched").format(path=path)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, module_text(socket).encode("utf-8"))
    print(_("p11-kit module file: {path} (remote: {remote})").format(
        path=path, remote=address(socket)))  # fmt: skip
    databases = nss_databases(args.nss)
    if databases:
        library = proxy_module()
        for db in databases:
            if _registered(db):
                print(_("NSS database {db}: already registered").format(db=db))
                continue
            added = _modutil("-dbdir", f"sql:{db}", "-add", MODULE_NAME, "-libfile", library)
            if added.returncode != 0:
                raise SetupError(_("modutil could not register in {db}: {error}").format(
                    db=db, error=_last_line(added)))  # fmt: skip
            print(_("NSS database {db}: registered ({library})").format(db=db, library=library))
    return ExitCode.OK


def uninstall(args: argparse.Namespace) -> int:
    path = module_file()
    if path.exists():
        if MARKER not in path.read_text(errors="replace"):
            raise SetupError(_("{path} was not written by mncctl; not removed").format(path=path))
        path.unlink()
        print(_("removed {path}").format(path=path))
    for db in nss_databases(args.nss):
        if not _registered(db):
            continue
        deleted = _modutil("-dbdir", f"sql:{db}", "-delete", MODULE_NAME)
        if deleted.returncode != 0:
            raise SetupError(_("modutil could not remove the module from {db}: {error}").format(
                db=db, error=_last_line(deleted)))  # fmt: skip
        print(_("NSS database {db}: removed").format(db=db))
    return ExitCode.OK
