"""A scripted pinentry for the daemon (see scripted_pinentry.py), set up in a test directory."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("scripted_pinentry.py")


class ScriptedPinentry:
    """``program`` answers the daemon's dialogs with ``answers``; ``log()`` is what it was asked."""

    def __init__(self, directory: Path, answers: list[object]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.script = directory / "answers.json"
        self.script.write_text(json.dumps(answers))
        self.log_path = directory / "pinentry.log"
        self.log_path.touch()
        # A copy beside its answers: the program may run as a test user who cannot reach the
        # checkout (a clone in a private directory).
        script = shutil.copy(SCRIPT, directory / SCRIPT.name)
        self.program = directory / "pinentry-scripted"
        self.program.write_text(
            "#!/bin/sh\nexec "
            + shlex.join([sys.executable, str(script), str(self.script), str(self.log_path)])
            + "\n"
        )
        self.program.chmod(0o755)

    def log(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def commands(self, name: str) -> list[dict[str, object]]:
        return [entry for entry in self.log() if entry["command"] == name]

    def started(self) -> int:
        """How many pinentry processes were started."""
        return len(self.commands("START")) + len(self.commands("OVERLAP"))

    def overlaps(self) -> int:
        """How many started while another was alive."""
        return len(self.commands("OVERLAP"))

    def descriptions(self) -> list[str]:
        return [str(entry["text"]) for entry in self.log() if entry["command"] == "SETDESC"]


def config_with(directory: Path, pinentry: ScriptedPinentry) -> dict[str, str]:
    """An XDG_CONFIG_HOME whose config.toml makes the daemon use ``pinentry``."""
    config = directory / "config" / "mncd"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text(f'[pinentry]\nprogram = "{pinentry.program}"\n')
    return {"XDG_CONFIG_HOME": str(directory / "config")}
