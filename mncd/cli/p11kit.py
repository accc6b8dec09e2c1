"""p11-kit's module configuration, as ``mncctl pkcs11`` and ``mncctl doctor`` read it.

p11-kit reads module files (``NAME.module``, lines ``key: value``) from the user's
``~/.config/pkcs11/modules`` (ignored for root) and from the system's directories. A user's file
named like a system one overrides that module's keys: p11-kit loads the user's first and merges
the system's in as defaults. ``enable-in`` and ``disable-in`` list program names; the name
``p11-kit-proxy`` stands for every program that loads p11-kit's proxy module, which is how NSS
applications (Firefox, Chromium, LibreOffice) see p11-kit's modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: Where Debian's packages (and the administrator) put module files.
SYSTEM_DIRS = (Path("/usr/share/p11-kit/modules"), Path("/etc/pkcs11/modules"))
#: The program name that stands for every loader of p11-kit's proxy.
PROXY = "p11-kit-proxy"


def user_dir() -> Path:
    """p11-kit's per-user module directory."""
    return Path.home() / ".config" / "pkcs11" / "modules"


def parse(text: str) -> dict[str, str]:
    """The ``key: value`` lines of a module file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        values.setdefault(key.strip(), value.strip())
    return values


def _names(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@dataclass
class ModuleConfig:
    """One module as p11-kit sees it: the user's file (if any) over the system's."""

    name: str
    user_file: Path | None = None
    system_file: Path | None = None
    values: dict[str, str] = field(default_factory=dict)

    @property
    def library(self) -> str:
        return self.values.get("module", "")

    @property
    def is_opensc(self) -> bool:
        return Path(self.library).name.startswith("opensc-pkcs11")

    def loaded_by(self, program: str) -> bool:
        """Whether p11-kit loads it in ``program`` (:data:`PROXY`: in p11-kit's proxy)."""
        enable_in = self.values.get("enable-in")
        if enable_in is not None:
            return program in _names(enable_in)
        return program not in _names(self.values.get("disable-in"))


def modules(user: Path | None = None, system: tuple[Path, ...] = SYSTEM_DIRS) -> list[ModuleConfig]:
    """Every module p11-kit knows of, the user's file over the system's."""
    found: dict[str, ModuleConfig] = {}
    for directory, is_user in [(user or user_dir(), True), *((d, False) for d in system)]:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.module")):
            try:
                values = parse(path.read_text(errors="replace"))
            except OSError:
                continue
            config = found.setdefault(path.stem, ModuleConfig(path.stem))
            if is_user:
                config.user_file = path
            elif config.system_file is None:
                config.system_file = path
            for key, value in values.items():
                config.values.setdefault(key, value)
    return list(found.values())
