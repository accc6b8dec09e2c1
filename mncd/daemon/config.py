"""User settings from ``$XDG_CONFIG_HOME/mncd/config.toml`` (all optional).

```toml
[notifications]
expiry = true          # expiry ahead / expired
invalidated = true     # signing certificate revoked by a change of personal data
pin-blocked = true
readers = true         # a reader is plugged in that pcscd cannot use
thresholds = [30, 7, 1]   # days before expiry, besides the day renewal opens

[pinentry]
program = "pinentry"

[pkcs11]
enabled = true         # serve PKCS#11 on $XDG_RUNTIME_DIR/mncd/pkcs11
login-timeout = 900    # seconds a PIN given to C_Login on the authentication token is held
```

A broken file is reported in the log and the defaults are used: settings never stop the daemon.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CATEGORIES = ("expiry", "invalidated", "pin-blocked", "readers")


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mncd" / "config.toml"


@dataclass
class Config:
    """Effective settings."""

    notify: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, True))
    #: Days before expiry to remind; the day renewal opens (from the card generation) is added.
    thresholds: tuple[int, ...] = (30, 7, 1)
    pinentry: str = "pinentry"
    pkcs11: bool = True
    pkcs11_login_timeout: int = 900

    @classmethod
    def load(cls, path: Path | None = None) -> Config:
        path = path or default_path()
        config = cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return config
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return config
        try:
            config._apply(data)
        except (TypeError, ValueError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return cls()
        return config

    def _apply(self, data: dict[str, Any]) -> None:
        notifications = data.get("notifications", {})
        for key, value in notifications.items():
            if key == "thresholds":
                if not isinstance(value, list) or not all(
                    isinstance(v, int) and 0 < v <= 3650 for v in value
                ):
                    raise ValueError("thresholds must be a list of days (1..3650)")
                self.thresholds = tuple(sorted(set(value), reverse=True))
            elif key in CATEGORIES:
                if not isinstance(value, bool):
                    raise ValueError(f"notifications.{key} must be true or false")
                self.notify[key] = value
            else:
                raise ValueError(f"unknown setting notifications.{key}")
        program = data.get("pinentry", {}).get("program")
        if program is not None:
            if not isinstance(program, str) or not program:
                raise ValueError("pinentry.program must be a command name")
            self.pinentry = program
        pkcs11 = data.get("pkcs11", {})
        if not isinstance(pkcs11, dict):
            raise ValueError("pkcs11 must be a table")
        for key, value in pkcs11.items():
            if key == "enabled":
                if not isinstance(value, bool):
                    raise ValueError("pkcs11.enabled must be true or false")
                self.pkcs11 = value
            elif key == "login-timeout":
                if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 86400:
                    raise ValueError("pkcs11.login-timeout must be seconds (1..86400)")
                self.pkcs11_login_timeout = value
            else:
                raise ValueError(f"unknown setting pkcs11.{key}")
