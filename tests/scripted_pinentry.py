"""A pinentry that answers from a script: the Assuan peer for tests that need no terminal.

Run as ``scripted_pinentry.py SCRIPT LOG``. SCRIPT is a JSON list of answers, consumed in
order: a string answers the next GETPIN with that PIN; ``true``/``false`` answer the next
CONFIRM (OK / not confirmed); ``"cancel"`` cancels a GETPIN. LOG receives one JSON line per
command (SETDESC texts decoded; GETPIN answers never written). With no answers left, GETPIN
is cancelled.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

CANCELLED = "ERR 83886179 Operation cancelled <Pinentry>"
NOT_CONFIRMED = "ERR 83886194 Not confirmed <Pinentry>"


def unescape(text: str) -> str:
    out = bytearray()
    data = text.encode()
    i = 0
    while i < len(data):
        if data[i] == 0x25 and i + 2 < len(data):
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return out.decode(errors="replace")


def main(script_path: str, log_path: str) -> None:
    answers = json.loads(Path(script_path).read_text())
    state_path = Path(script_path + ".used")
    used = int(state_path.read_text()) if state_path.exists() else 0
    with Path(log_path).open("a", encoding="utf-8") as log:
        converse(answers, state_path, used, log)


def converse(answers: list[object], state_path: Path, used: int, log: TextIO) -> None:
    """Answer the Assuan commands on stdin until BYE or end of input."""

    def next_answer() -> object:
        nonlocal used
        if used >= len(answers):
            return None
        answer = answers[used]
        used += 1
        state_path.write_text(str(used))
        return answer

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    log.write(json.dumps({"pid": os.getpid(), "command": "START"}) + "\n")
    log.flush()
    say("OK Pleased to meet you")
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        command, _, argument = line.partition(" ")
        log.write(json.dumps({"pid": os.getpid(), "command": command,
                              "text": unescape(argument)}, ensure_ascii=False) + "\n")  # fmt: skip
        log.flush()
        if command == "GETPIN":
            answer = next_answer()
            if isinstance(answer, str) and answer != "cancel":
                say("D " + answer.replace("%", "%25"))
                say("OK")
            else:
                say(CANCELLED)
        elif command == "CONFIRM":
            say("OK" if next_answer() is True else NOT_CONFIRMED)
        elif command == "BYE":
            say("OK closing connection")
            break
        else:
            say("OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
