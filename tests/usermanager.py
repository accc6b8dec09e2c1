"""A real ``systemd --user`` manager for a test user, following
``design/systemd-user-test.md``: delegated cgroups, a private mount namespace, a private journald.

The host is not booted with systemd, so the manager gets what a login would give it by hand:

- a test user (created here and deleted afterwards; a leftover of a killed run is reused);
- cgroups ``user.slice/user-U.slice/user@U.service`` in each cgroup hierarchy systemd uses,
  owned by the user (delegation);
- a mount namespace (``unshare -m --propagation private``) with its own tmpfs on ``/run``
  (``/run/systemd/system`` tells the manager it may run, ``/run/user/U`` is its runtime
  directory), a journald of its own, and the test's pcscd socket directory bound on
  ``/run/pcscd`` where a desktop's pcscd would be.

Safety: the host's ``/run``, ``/var/log/journal`` and ``/tmp`` are never written (the namespace
has its own ``/run`` and journal), no system manager is ever started, and everything created here
(processes, cgroups, the user, files) is removed in :meth:`UserManager.stop`, which also runs when
starting fails. A lock serializes test runs of the same machine. The root helper in the namespace
dies with the test process (``PR_SET_PDEATHSIG``) and then stops the manager and journald.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

USER = "mncdtest"
#: The GECOS field marks the user as this fixture's (so a leftover is recognized and removed).
GECOS = "mncd systemd user-manager tests"
LOCK = Path("/run/lock/mncd-systemd-user-test.lock")
CGROUP_ROOT = Path("/sys/fs/cgroup")
SYSTEMD = "/lib/systemd/systemd"
JOURNALD = "/lib/systemd/systemd-journald"
PATH = "/usr/local/bin:/usr/bin:/bin"


class UserManagerError(RuntimeError):
    """This machine cannot run a systemd user manager for the tests; the text says why."""


def cgroup_hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """The cgroup hierarchies a user manager needs delegated: the named ``systemd`` v1 hierarchy
    and the unified one (hybrid layout), or the one cgroup2 hierarchy (unified layout)."""
    if _fs_type(root) == "cgroup2":
        return [root]
    found = [root / "unified", root / "systemd"]
    if [_fs_type(p) for p in found] != ["cgroup2", "cgroup"]:
        raise UserManagerError(
            f"no delegable cgroups: {root} is neither cgroup2 nor a hybrid layout with "
            f"{root}/unified (cgroup2) and {root}/systemd (name=systemd)"
        )
    return found


def _fs_type(path: Path) -> str:
    """The file-system type mounted exactly at ``path`` ('' when nothing is)."""
    with open("/proc/self/mounts") as mounts:
        types = [line.split()[2] for line in mounts if line.split()[1] == str(path)]
    return types[-1] if types else ""


def preflight() -> list[Path]:
    """Check what the recipe needs; raise :class:`UserManagerError` naming what is missing."""
    if os.geteuid() != 0:
        raise UserManagerError(
            "a systemd user manager for the tests needs root (a test user and delegated cgroups)"
        )
    if Path("/run/systemd/system").exists():
        raise UserManagerError(
            "this machine is booted with systemd: its own manager owns the cgroups, and the "
            "tests do not start a user manager beside it"
        )
    for tool in ("unshare", "nsenter", "setpriv", "useradd", "usermod", "userdel", "systemctl"):
        if shutil.which(tool) is None:
            raise UserManagerError(f"{tool} is missing (scripts/setup installs it)")
    for program in (SYSTEMD, JOURNALD, "/usr/lib/systemd/user/dbus.socket"):
        if not os.path.exists(program):
            raise UserManagerError(
                f"{program} is missing (Debian packages systemd, dbus-user-session)"
            )
    return cgroup_hierarchies()


class UserManager:
    """``systemd --user`` for :data:`USER`, with a private journald, in a mount namespace."""

    def __init__(self, pcscd_dir: Path, expose: list[Path]) -> None:
        self.pcscd_dir = pcscd_dir
        #: Directories the user's programs need (Python, the checkout) even where a parent
        #: directory is closed (a checkout in ``/root``); see :func:`_expose`.
        self.expose = [Path(p).resolve() for p in expose]
        self.dir = Path(tempfile.mkdtemp(prefix="mncd-usermanager-"))
        self.dir.chmod(0o711)  # the user's home is inside
        self.home = self.dir / "home"
        self.log_path = self.dir / "namespace.log"
        self.uid = self.gid = -1
        self._created_user = False
        self._cgroups: list[Path] = []
        self._lock: Any = None
        self._inside: subprocess.Popen[bytes] | None = None
        self._cursor: str | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> UserManager:
        try:
            hierarchies = preflight()
            self._lock = LOCK.open("a")
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            self._ensure_user()
            self._delegate_cgroups(hierarchies)
            self._start_inside(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the manager and journald and remove every cgroup, file and user made here."""
        inside, self._inside = self._inside, None
        if inside is not None and inside.poll() is None:
            inside.send_signal(signal.SIGTERM)
            try:
                inside.wait(timeout=60)
            except subprocess.TimeoutExpired:
                inside.kill()
                inside.wait()
        for cgroup in self._cgroups:
            _kill_and_remove(cgroup.parent)  # user-U.slice
            with contextlib.suppress(OSError):  # user.slice, unless another user's is left
                cgroup.parent.parent.rmdir()
        self._cgroups.clear()
        if self._created_user:
            # --remove: its temporary home and a mail spool, where useradd makes one.
            subprocess.run(["userdel", "--remove", USER], capture_output=True, check=False)
            self._created_user = False
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def _ensure_user(self) -> None:
        # The home directory goes into passwd too: dbus-daemon finds ~/.local/share there.
        home = ["-d", str(self.home)]
        try:
            entry = pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--comment", GECOS, "--user-group", "--no-create-home", *home,
                 "--shell", "/usr/sbin/nologin", USER],
                check=True, capture_output=True,
            )  # fmt: skip
            self._created_user = True
        else:
            if entry.pw_gecos != GECOS:
                raise UserManagerError(f"user {USER} exists and is not this fixture's test user")
            self._created_user = True  # left over by a killed run: removed at the end
            old = Path(entry.pw_dir).parent
            if old.parent == self.dir.parent and old.name.startswith("mncd-usermanager-"):
                shutil.rmtree(old, ignore_errors=True)  # that run's directory
            subprocess.run(["usermod", *home, USER], check=True, capture_output=True)
        entry = pwd.getpwnam(USER)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.home.mkdir(mode=0o700)
        os.chown(self.home, self.uid, self.gid)

    def _delegate_cgroups(self, hierarchies: list[Path]) -> None:
        """``user.slice/user-U.slice/user@U.service`` in each hierarchy, owned by the user. On a
        machine not booted with systemd nothing else uses ``user.slice``; what a killed run left
        there (for this user, or for a test user since deleted) is cleared first."""
        for root in hierarchies:
            for stale in (root / "user.slice").glob("user-*.slice"):
                uid = stale.name.removeprefix("user-").removesuffix(".slice")
                if uid == str(self.uid) or not _user_exists(uid):
                    _kill_and_remove(stale)
            path = root / "user.slice" / f"user-{self.uid}.slice" / f"user@{self.uid}.service"
            self._cgroups.append(path)
            path.mkdir(parents=True)
            for entry in [path, *path.iterdir()]:
                os.chown(entry, self.uid, self.gid)

    def _start_inside(self, timeout: float) -> None:
        config = {
            "uid": self.uid,
            "gid": self.gid,
            "home": str(self.home),
            "pcscd": str(self.pcscd_dir),
            "cgroups": [str(p) for p in self._cgroups],
            "expose": [str(p) for p in self.expose],
            "ready": str(self.dir / "ready"),
        }
        with self.log_path.open("ab") as log:
            self._inside = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", sys.executable,
                 __file__, json.dumps(config)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        ready = self.dir / "ready"
        while not ready.exists():
            if self._inside.poll() is not None:
                raise UserManagerError(f"the user manager did not start:\n{self.namespace_log}")
            if time.monotonic() > deadline:
                raise UserManagerError(
                    f"the user manager did not start in {timeout:.0f} s:\n{self.namespace_log}"
                )
            time.sleep(0.1)
        if ready.read_text() != "running":
            raise UserManagerError(
                f"the user manager is {ready.read_text()!r}, not running:\n{self.namespace_log}"
            )

    @property
    def namespace_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- commands as the user ----------------------------------------------------------------

    @property
    def runtime_dir(self) -> str:
        return f"/run/user/{self.uid}"

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.runtime_dir}/bus"

    def env(self) -> dict[str, str]:
        """The environment of a program the user starts in their session."""
        return {
            "HOME": str(self.home),
            "USER": USER,
            "LOGNAME": USER,
            "PATH": PATH,
            "LANG": "C.UTF-8",
            "XDG_RUNTIME_DIR": self.runtime_dir,
            "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
        }

    def command(self, *argv: str) -> list[str]:
        """``argv`` as the user, inside the namespace, with :meth:`env`."""
        assert self._inside is not None, "the user manager is not running"
        return [
            "nsenter", f"--target={self._inside.pid}", "--mount", "--",
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
            "env", "-i", *(f"{k}={v}" for k, v in self.env().items()), *argv,
        ]  # fmt: skip

    def run(
        self, *argv: str, check: bool = True, timeout: float = 90, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the user; with ``check``, fail with its output when it fails."""
        result = subprocess.run(
            self.command(*argv), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--user", "--no-pager", *args, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl --user show`` of ``unit`` as a dict."""
        result = self.systemctl("show", unit, *(f"--property={p}" for p in properties))
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    def journal(self, *args: str) -> list[dict[str, Any]]:
        """``journalctl --user ARGS -o json`` since :meth:`mark_journal`: one dict per entry,
        oldest first."""
        since = [f"--after-cursor={self._cursor}"] if self._cursor else []
        result = self.run("journalctl", "--user", "--no-pager", "--output=json", *since, *args)
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def mark_journal(self) -> None:
        """From now on, :meth:`journal` returns only newer entries."""
        self._cursor = None
        last = self.journal("--lines=1")
        self._cursor = last[-1]["__CURSOR"] if last else None


def _user_exists(uid: str) -> bool:
    try:
        pwd.getpwuid(int(uid))
    except (KeyError, ValueError):
        return False
    return True


def _kill_and_remove(cgroup: Path) -> None:
    """SIGKILL every process in ``cgroup`` and below (all started by a test), then remove it."""
    if not cgroup.is_dir():
        return
    for _ in range(100):
        pids = [
            int(pid) for procs in cgroup.rglob("cgroup.procs") for pid in procs.read_text().split()
        ]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for directory in sorted(
        (p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        directory.rmdir()
    cgroup.rmdir()


# -- inside the mount namespace (root) -------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _expose(paths: list[Path]) -> None:
    """Make ``paths`` reachable for everyone in this namespace: a directory above them that only
    its owner may enter (``/root`` for a Python built in root's home) is covered with a tmpfs in
    which each path is mounted again at its own place. The host's files are not changed."""
    paths = [p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)]
    blocked: dict[Path, list[Path]] = {}
    for path in paths:
        for directory in [*reversed(path.parents), path][1:]:
            if not directory.stat().st_mode & 0o001:
                blocked.setdefault(directory, []).append(path)
                break
    for n, (directory, inner) in enumerate(blocked.items()):
        if directory in inner:
            raise UserManagerError(f"{directory} itself is closed to other users")
        stages = []
        for i, path in enumerate(inner):
            stage = Path(f"/run/mncd-expose/{n}-{i}")
            stage.mkdir(parents=True)
            _mount("--bind", str(path), str(stage))
            stages.append((stage, path))
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(directory))
        for stage, path in stages:
            path.mkdir(parents=True, mode=0o755)
            _mount("--move", str(stage), str(path))
    shutil.rmtree("/run/mncd-expose", ignore_errors=True)


def inside(config: dict[str, Any]) -> None:
    """Set up the namespace, start journald and the manager, and stop both on SIGTERM."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the test process died → tear down
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if os.getppid() == 1:
        return  # the test process is already gone
    uid, gid = config["uid"], config["gid"]
    runtime = Path(f"/run/user/{uid}")

    # A /run of our own: the host's is never written.
    _mount("-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", "/run")
    for directory in ("/run/systemd/system", "/run/log", "/run/pcscd", str(runtime)):
        os.makedirs(directory, exist_ok=True)
    os.chown(runtime, uid, gid)
    runtime.chmod(0o700)
    _mount("--bind", config["pcscd"], "/run/pcscd")
    _expose([Path(p) for p in config["expose"]])
    persistent = Path("/var/log/journal").is_dir()
    if persistent:  # journald would flush into the host's journal directory
        _mount("-t", "tmpfs", "-o", "mode=2755", "tmpfs", "/var/log/journal")

    journald = subprocess.Popen([JOURNALD])
    _wait(lambda: os.path.exists("/run/systemd/journal/socket"), "journald")
    if persistent:
        subprocess.run(["journalctl", "--flush"], check=False, timeout=60)

    def enter_cgroups() -> None:  # in the child, before exec: the manager starts in its cgroups
        for cgroup in config["cgroups"]:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                procs.write("0")

    env = {
        "HOME": config["home"],
        "USER": USER,
        "LOGNAME": USER,
        "PATH": PATH,
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": str(runtime),
    }
    manager = subprocess.Popen(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups",
         SYSTEMD, "--user", "--log-target=journal"],
        env=env, preexec_fn=enter_cgroups,
    )  # fmt: skip
    user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
    state = "failed to start"
    try:
        _wait(lambda: (runtime / "systemd" / "private").exists() or manager.poll() is not None,
              "the manager's private socket")  # fmt: skip
        if manager.poll() is None:
            result = subprocess.run(
                [*user, "systemctl", "--user", "is-system-running", "--wait"],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            state = result.stdout.strip() or result.stderr.strip()
            if state != "running":
                subprocess.run([*user, "systemctl", "--user", "--no-pager", "--failed"], env=env)
        Path(config["ready"]).write_text(state)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        if manager.poll() is None:
            manager.terminate()  # the manager stops its units, then exits
            try:
                manager.wait(timeout=45)
            except subprocess.TimeoutExpired:
                manager.kill()
                manager.wait()
        journald.terminate()
        try:
            journald.wait(timeout=15)
        except subprocess.TimeoutExpired:
            journald.kill()
            journald.wait()


if __name__ == "__main__":
    inside(json.loads(sys.argv[1]))
