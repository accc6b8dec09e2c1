"""A private session bus (dbus-daemon) in a directory, for the demo, tests and benchmarks."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  {servicedirs}
  {limits}
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


#: The limits of a desktop's session bus (``/usr/share/dbus-1/session.conf``): memory and pending
#: replies "essentially infinite". Without them dbus-daemon applies its own, lower defaults
#: (127 MB queued per connection, 128 pending replies per connection).
SESSION_LIMITS = {
    "max_incoming_bytes": 1000000000,
    "max_outgoing_bytes": 1000000000,
    "max_message_size": 1000000000,
    "max_replies_per_connection": 50000,
    "max_match_rules_per_connection": 50000,
}


class PrivateSessionBus:
    """A dbus-daemon of type session, listening on a socket in a temporary directory."""

    def __init__(
        self,
        directory: Path,
        service_dirs: list[Path] | None = None,
        env: dict[str, str] | None = None,
        limits: dict[str, int] | None = None,
    ) -> None:
        """``limits``: dbus-daemon ``<limit>`` settings (e.g. :data:`SESSION_LIMITS`); without
        them, dbus-daemon's built-in defaults."""
        self.dir = directory
        self.socket = directory / "bus"
        self.address = f"unix:path={self.socket}"
        config = directory / "bus.conf"
        dirs = "".join(f"<servicedir>{d}</servicedir>" for d in service_dirs or [])
        limit_lines = "".join(
            f'<limit name="{name}">{value}</limit>' for name, value in (limits or {}).items()
        )
        config.write_text(
            BUS_CONFIG.format(socket=self.socket, servicedirs=dirs, limits=limit_lines)
        )
        self.process = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"],
            stdout=subprocess.DEVNULL,
            stderr=(directory / "dbus-daemon.log").open("wb"),
            env=env,
        )
        deadline = time.monotonic() + 10
        # The socket file appears at bind(), a moment before listen(): wait until it takes a
        # connection, or a client connecting right away is refused.
        while not self._accepts():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("dbus-daemon did not start")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __enter__(self) -> PrivateSessionBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
