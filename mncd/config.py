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

Settings never stop the daemon: an unknown key or a bad value is skipped (that key keeps its
default, every other setting still applies) and listed in :attr:`Config.problems`, which the
daemon logs and announces once and ``mncctl doctor`` shows; a file that is not TOML at all gives
the defaults, with one problem saying why.
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
    #: What was wrong in the file, one sentence per skipped key or value.
    problems: list[str] = field(default_factory=list)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None, *, quiet: bool = False) -> Config:
        """The settings in ``path`` (default: the user's file); problems are logged unless
        ``quiet`` (a caller that shows them itself)."""
        path = path or default_path()
        config = cls(path=path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return config
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            config.problems.append(
                f"{path} cannot be read, so every setting is at its default: {exc}"
            )
        else:
            config._apply(data)
        for problem in [] if quiet else config.problems:
            log.warning("settings: %s", problem)
        return config

    def _apply(self, data: dict[str, Any]) -> None:
        for section, values in data.items():
            handler = {
                "notifications": self._notification,
                "pinentry": self._pinentry,
                "pkcs11": self._pkcs11,
            }.get(section)
            if handler is None:
                self.problems.append(f"unknown section [{section}] ignored")
            elif not isinstance(values, dict):
                self.problems.append(f"{section} must be a section ([{section}]); ignored")
            else:
                for key, value in values.items():
                    handler(key, value)

    def _notification(self, key: str, value: Any) -> None:
        if key == "thresholds":
            if (
                isinstance(value, list)
                and value
                and all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 3650 for v in value
                )
            ):
                self.thresholds = tuple(sorted(set(value), reverse=True))
            else:
                self.problems.append(
                    "notifications.thresholds must be a list of days (1 to 3650); "
                    f"using {list(self.thresholds)}"
                )
        elif key in CATEGORIES:
            if isinstance(value, bool):
                self.notify[key] = value
            else:
                self.problems.append(f"notifications.{key} must be true or false; using true")
        else:
            self.problems.append(f"unknown setting notifications.{key} ignored")

    def _pinentry(self, key: str, value: Any) -> None:
        if key != "program":
            self.problems.append(f"unknown setting pinentry.{key} ignored")
        elif isinstance(value, str) and value.strip() and "\n" not in value:
            self.pinentry = value.strip()
        else:
            self.problems.append(f"pinentry.program must be a program name; using {self.pinentry}")

    def _pkcs11(self, key: str, value: Any) -> None:
        if key == "enabled":
            if isinstance(value, bool):
                self.pkcs11 = value
            else:
                self.problems.append("pkcs11.enabled must be true or false; using true")
        elif key == "login-timeout":
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 86400:
                self.pkcs11_login_timeout = value
            else:
                self.problems.append(
                    "pkcs11.login-timeout must be seconds (1 to 86400); "
                    f"using {self.pkcs11_login_timeout}"
                )
        else:
            self.problems.append(f"unknown setting pkcs11.{key} ignored")
