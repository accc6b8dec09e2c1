"""A pinentry that answers from a script: the Assuan peer for tests that need no terminal.

Run as ``scripted_pinentry.py SCRIPT LOG``. SCRIPT is a JSON list of answers, consumed in
order across every pinentry process started: a string answers the next GETPIN with that PIN;
``true``/``false`` answer the next CONFIRM (OK / not confirmed); ``"cancel"`` cancels a GETPIN;
``{"wait": PATH, "then": ANSWER}`` first waits until PATH exists (``"delay": SECONDS``: that
long); ``"hold"`` never answers
(until the process is killed). After SETREPEAT a string answers as a pinentry that had the PIN
typed twice and found both the same (``S PIN_REPEATED``, as pinentry-tty does);
``{"once": PIN}`` answers as a pinentry without SETREPEAT, which asks once. With no answers
left, GETPIN is cancelled. LOG receives one JSON line per command (SETDESC texts decoded; PINs
never written), and ``OVERLAP`` when another scripted pinentry was alive at the same time.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
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


class Script:
    """The answers, shared by every instance through a file of how many were used."""

    def __init__(self, path: str) -> None:
        self.answers = json.loads(Path(path).read_text())
        self.used_path = Path(path + ".used")

    def next(self) -> object:
        used = int(self.used_path.read_text()) if self.used_path.exists() else 0
        if used >= len(self.answers):
            return None
        self.used_path.write_text(str(used + 1))
        answer = self.answers[used]
        if isinstance(answer, dict) and "then" in answer:  # {"wait"|"delay": ..., "then": ...}
            time.sleep(answer.get("delay", 0))
            while "wait" in answer and not Path(answer["wait"]).exists():
                time.sleep(0.05)
            answer = answer["then"]
        while answer == "hold":
            time.sleep(1)
        return answer


def main(script_path: str, log_path: str) -> None:
    # One lock for all instances, held for the process's life (released even when killed).
    lock = Path(script_path + ".lock").open("a")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        overlap = False
    except BlockingIOError:
        overlap = True
    with Path(log_path).open("a", encoding="utf-8") as log:
        write(log, {"command": "OVERLAP" if overlap else "START"})
        converse(Script(script_path), log)
        write(log, {"command": "END"})


def write(log: TextIO, entry: dict[str, object]) -> None:
    log.write(json.dumps({"pid": os.getpid(), **entry}, ensure_ascii=False) + "\n")
    log.flush()


def converse(script: Script, log: TextIO) -> None:
    """Answer the Assuan commands on stdin until BYE or end of input."""

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say("OK Pleased to meet you")
    repeat = False  # SETREPEAT holds for the next GETPIN only, as in pinentry
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        command, _, argument = line.partition(" ")
        write(log, {"command": command, "text": unescape(argument)})
        if command == "SETREPEAT":
            repeat = True
            say("OK")
        elif command == "GETPIN":
            answer = script.next()
            repeated = repeat
            repeat = False
            if isinstance(answer, dict) and "once" in answer:
                answer, repeated = answer["once"], False
            if isinstance(answer, str) and answer != "cancel":
                if repeated:
                    say("S PIN_REPEATED")
                say("D " + answer.replace("%", "%25"))
                say("OK")
            else:
                say(CANCELLED)
        elif command == "CONFIRM":
            say("OK" if script.next() is True else NOT_CONFIRMED)
        elif command == "BYE":
            say("OK closing connection")
            break
        else:
            say("OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
