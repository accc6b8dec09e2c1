"""An isolated PC/SC stack: a private pcscd with the vpcd driver, and the virtual-card host.

Both run in their own mount and network namespaces (``unshare -m -n``): pcscd's ``/run/pcscd`` is a
directory of the sandbox bound over the real one, so the host's pcscd (if any) is neither seen
nor disturbed, and the vpcd ports live on a private loopback. Clients outside reach the private
pcscd through libpcsclite's ``PCSCLITE_CSOCK_NAME``; tests drive the cards through the host's
control socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .control import CardControl

VPCD_DRIVER_CANDIDATES = (
    "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
)


class SandboxError(RuntimeError):
    """The isolated PC/SC stack could not be started."""


def vpcd_driver() -> str:
    for path in VPCD_DRIVER_CANDIDATES:
        if os.path.exists(path):
            return path
    raise SandboxError("vsmartcard's vpcd driver is missing (Debian package vsmartcard-vpcd)")


class PcscSandbox:
    """Starts and stops one isolated pcscd + virtual-card host."""

    def __init__(
        self, workdir: Path | None = None, debug: bool = False, readers: bool = True
    ) -> None:
        """``readers=False``: a pcscd without the vpcd readers (one that sees no reader)."""
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="mncd-pcsc-"))
        self.debug = debug
        self.readers = readers
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.dir / "run" / "pcscd.comm"

    @property
    def control_path(self) -> Path:
        return self.dir / "control.sock"

    @property
    def env(self) -> dict[str, str]:
        """Environment that points libpcsclite clients at this sandbox's pcscd."""
        return {"PCSCLITE_CSOCK_NAME": str(self.socket_path)}

    @property
    def control(self) -> CardControl:
        return CardControl(self.control_path)

    @property
    def log_path(self) -> Path:
        return self.dir / "sandbox.log"

    def start(self, timeout: float = 30.0) -> PcscSandbox:
        for tool in ("unshare", "pcscd", "ip"):
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
                raise SandboxError(f"{tool} is missing; run scripts/setup")
        conf = self.dir / "reader.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (self.dir / "run").mkdir(exist_ok=True)
        if self.readers:
            (conf / "vpcd").write_text(
                'FRIENDLYNAME "Virtual PCD"\n'
                "DEVICENAME   /dev/null:0x8C7B\n"
                f"LIBPATH      {vpcd_driver()}\n"
                "CHANNELID    0x8C7B\n"
            )
        cmd = ["unshare", "--mount", "--net", "--propagation", "private"]
        if os.geteuid() != 0:
            cmd.append("--map-root-user")
        cmd += [sys.executable, "-m", "mncd.vcard.sandbox", str(self.dir)]
        if self.debug:
            cmd.append("--debug")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SandboxError(f"sandbox exited early; see {self.log_path}")
            if self.socket_path.exists() and self.control_path.exists():
                try:
                    self.control.call("ping")
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise SandboxError(f"sandbox did not come up in {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pcscd(self, action: str) -> dict[str, Any]:
        """``stop``, ``kill`` (SIGKILL, cards left as they are), ``freeze`` (SIGSTOP: a pcscd
        that hangs), ``thaw``, ``start`` or ``status`` of the sandbox's pcscd (to test how
        clients cope)."""
        return self.control.call("pcscd", action=action)

    def __enter__(self) -> PcscSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- inside the namespaces --------------------------------------------------------------------


class _Inside:
    """Runs in the new namespaces: owns pcscd and the card host."""

    def __init__(self, workdir: Path, debug: bool) -> None:
        self.dir = workdir
        self.debug = debug
        self.pcscd: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def prepare(self) -> None:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        if not os.path.isdir("/run/pcscd"):
            # Keep the host's /run untouched: give this namespace its own.
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
            os.mkdir("/run/pcscd")
        subprocess.run(["mount", "--bind", str(self.dir / "run"), "/run/pcscd"], check=True)

    def start_pcscd(self) -> None:
        with self.lock:
            if self.pcscd is not None and self.pcscd.poll() is None:
                return
            for stale in ("pcscd.comm", "pcscd.pid"):
                (self.dir / "run" / stale).unlink(missing_ok=True)
            args = ["pcscd", "--foreground", "--config", str(self.dir / "reader.conf.d")]
            if self.debug:
                args += ["--debug", "--apdu"]
            log = (self.dir / "pcscd.log").open("ab")
            self.pcscd = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 10
            while not (self.dir / "run" / "pcscd.comm").exists():
                if time.monotonic() > deadline or self.pcscd.poll() is not None:
                    raise SandboxError("pcscd did not start")
                time.sleep(0.02)

    def kill_pcscd(self) -> None:
        """SIGKILL pcscd, as a crash would end it: no cleanup, sockets just close."""
        with self.lock:
            if self.pcscd is not None and self.pcscd.poll() is None:
                self.pcscd.kill()
                self.pcscd.wait()
            self.pcscd = None

    def signal_pcscd(self, signum: int) -> None:
        with self.lock:
            if self.pcscd is not None and self.pcscd.poll() is None:
                self.pcscd.send_signal(signum)

    def stop_pcscd(self) -> None:
        with self.lock:
            if self.pcscd is not None and self.pcscd.poll() is None:
                self.pcscd.send_signal(signal.SIGCONT)  # a frozen pcscd cannot end otherwise
                self.pcscd.terminate()
                try:
                    self.pcscd.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.pcscd.kill()
                    self.pcscd.wait()
            self.pcscd = None

    def run(self) -> None:
        from .host import CardHost

        self.prepare()
        self.start_pcscd()
        host = CardHost()

        def pcscd_command(request: dict[str, Any]) -> dict[str, Any]:
            action = request.get("action")
            if action == "stop":
                host.remove_all()
                self.stop_pcscd()
            elif action == "kill":
                self.kill_pcscd()
            elif action in ("freeze", "thaw"):
                self.signal_pcscd(signal.SIGSTOP if action == "freeze" else signal.SIGCONT)
            elif action == "start":
                self.start_pcscd()
            elif action != "status":
                raise ValueError("action must be stop, kill, freeze, thaw, start or status")
            return {"running": self.pcscd is not None and self.pcscd.poll() is None}

        host.extra_commands["pcscd"] = pcscd_command

        def terminate(*_: object) -> None:
            host.remove_all()
            self.stop_pcscd()
            os._exit(0)

        signal.signal(signal.SIGTERM, terminate)
        signal.signal(signal.SIGINT, terminate)
        host.serve_control(self.dir / "control.sock")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _Inside(Path(args[0]), debug).run()


if __name__ == "__main__":
    main()
