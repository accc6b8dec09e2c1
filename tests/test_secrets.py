"""Secrets: no PIN and no personal data in any log line, journal field, error text or cache
file; the cache private; the individual number never selected.

The card here (and in the rest of the fault suite) has secrets that appear nowhere else: a
signing password like ``QZ7XK93W`` and a unique address, so a grep for them cannot match by
chance. 4-digit PINs can appear by chance in pids or hex, so for them the check is that no text
puts one next to the word PIN, and that nothing says ``pin=``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import faultstats
import pytest
from busstack import CallError, wait_for
from faultkit import (
    ERR,
    ERROR_TEXTS,
    SECRET_CARD,
    SECRET_STRINGS,
    SELECT_CARD_INFO,
    Stack,
    authenticate,
    call,
    check_cache,
    files_under,
    individual_number_selected,
    select_ef,
    sign,
)

WRONG_PASSWORD = "WRONG123"
SHORT_PINS = (SECRET_CARD["auth_pin"], SECRET_CARD["card_info_pin"], "0000")
PIN_NEAR = re.compile(
    r"(?i)(pin|password|暗証番号|パスワード)\W{0,4}(" + "|".join(SHORT_PINS) + r")\b"
)
#: What the grep looks for beyond the distinctive secrets.
EXTRA = (WRONG_PASSWORD, "qz7xk93w", SECRET_CARD["sign_password"].lower())

JOURNAL_WRAPPER = """
import json, os, sys
from systemd import journal

# stderr is "the journal stream": the daemon then logs through JournalHandler, whose fields
# (MESSAGE, CODE_*, LOGGER, THREAD_NAME, exception text, ...) are captured here as sent.
st = os.fstat(2)
os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
out = open(sys.argv[1], "a", encoding="utf-8")

def send(MESSAGE, **fields):
    record = {"MESSAGE": MESSAGE, **{k: str(v) for k, v in fields.items()}}
    out.write(json.dumps(record, ensure_ascii=False) + "\\n")
    out.flush()

# JournalHandler(level=NOTSET, sender_function=journal.send, **fields): swap the sender.
journal.JournalHandler.__init__.__defaults__ = (0, send)
from mncd.daemon.main import main
sys.exit(main(["--verbose"]))
"""


def leaks(text: str) -> list[str]:
    """Secrets found in ``text``."""
    found = [s for s in (*SECRET_STRINGS, *EXTRA) if s in text]
    found += [m.group(0) for m in PIN_NEAR.finditer(text)]
    if re.search(r"(?i)\bpin\s*=", text):
        found.append("pin=")
    return found


def scan(paths: list[Path]) -> dict[str, list[str]]:
    """Every file's leaks (binary files are read as UTF-8 with replacement)."""
    found = {}
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue  # a FIFO or a file that vanished
        faultstats.add("secret_files")
        if hits := leaks(text):
            found[str(path)] = hits
    faultstats.add("secret_leaks", len(found))
    return found


@pytest.fixture
def journal_stack(sandbox, tmp_path):
    """mncd logging through systemd's JournalHandler, every field captured in a file."""
    stack = Stack(tmp_path, sandbox.env)
    fields = tmp_path / "journal.jsonl"
    script = tmp_path / "journal_wrapper.py"
    script.write_text(JOURNAL_WRAPPER)
    stack.start(wrapper=[sys.executable, str(script), str(fields)])
    yield stack, fields
    stack.close()


def test_a_full_session_leaks_nothing(journal_stack, insert_card, sandbox):
    stack, fields = journal_stack
    address = stack.address
    # The signing certificate's address differs from the card's: the check finds a change.
    card = insert_card(**SECRET_CARD, cert_address=SECRET_CARD["address"] + "別館")
    stack.wait_state("card-present")
    texts: list[str] = [json.dumps(stack.wait_state("card-present"), ensure_ascii=False)]
    authenticate(address, SECRET_CARD["auth_pin"])
    sign(address, SECRET_CARD["sign_password"])
    for attempt in (
        lambda: authenticate(address, "0000"),
        lambda: sign(address, WRONG_PASSWORD),
        lambda: sign(address, "qz7xk93w"),
        lambda: sign(address, SECRET_CARD["sign_password"] + "X" * 9),
        lambda: authenticate(address, SECRET_CARD["auth_pin"] + "0"),
        lambda: call(address, "CheckPersonalData", "{'pin': <'64820'>}"),
        lambda: call(address, "GetCertificate", "'sign'"),
    ):
        with pytest.raises(CallError) as err:
            attempt()
        assert err.value.name.startswith(ERR)
    output = call(
        address, "CheckPersonalData",
        f"{{'pin': <'{SECRET_CARD['card_info_pin']}'>, "
        f"'sign-pin': <'{SECRET_CARD['sign_password']}'>}}",
    )  # fmt: skip
    texts.append(output)
    assert "'address'" in output and "false" in output  # a change was found, by kind only
    card.control.pull_on("802A", slot=card.slot)
    with pytest.raises(CallError):
        sign(address, SECRET_CARD["sign_password"])
    stack.wait_state("no-card")
    texts.append(json.dumps(stack.wait_state("no-card"), ensure_ascii=False))
    commands = card.commands()
    assert SELECT_CARD_INFO in commands and select_ef(0x0002) in commands
    assert not individual_number_selected(commands)
    stack.daemon.stop()
    journal = [json.loads(line) for line in fields.read_text().splitlines()]
    assert any(r["MESSAGE"].startswith("Sign requested by") for r in journal)
    assert {"MESSAGE", "CODE_FILE", "LOGGER", "SYSLOG_IDENTIFIER"} <= set(journal[0])
    journal_text = "\n".join(json.dumps(r, ensure_ascii=False) for r in journal)
    assert leaks(journal_text) == []
    assert leaks("\n".join(texts + ERROR_TEXTS)) == []
    assert scan(list(files_under(stack.dir))) == {}
    check_cache(stack.cache_dir)


def test_nothing_the_suite_wrote_holds_a_secret(tmp_path_factory, sandbox):
    """Every file under this pytest run's temporary root (daemon logs, bus logs, caches of
    every test) and the PC/SC sandbox's logs, and every error text callers received."""
    roots = [tmp_path_factory.getbasetemp(), sandbox.dir]
    paths = [p for root in roots for p in files_under(root)]
    assert scan(paths) == {}
    assert [t for t in ERROR_TEXTS if leaks(t)] == []
    faultstats.add("secret_texts", len(ERROR_TEXTS))
    # Every cache the suite left is private.
    for cards in tmp_path_factory.getbasetemp().glob("**/mncd/cards"):
        mode = cards.stat().st_mode & 0o777
        assert mode == 0o700, cards
        for path in cards.glob("*.json"):
            assert path.stat().st_mode & 0o777 == 0o600, path


def test_daemon_log_is_plain_about_callers(sandbox, tmp_path, insert_card):
    """The stderr log names who asked for a signature, and nothing of what was signed."""
    stack = Stack(tmp_path, sandbox.env).start()
    try:
        insert_card(**SECRET_CARD)
        stack.wait_state("card-present")
        document = "契約書 QXADDR5501 confidential".encode()
        sign(stack.address, SECRET_CARD["sign_password"], document)
        wait_for(lambda: "Sign requested by" in stack.daemon.log, "the log line")
    finally:
        stack.close()
    log = stack.daemon.log
    assert "QXADDR5501" not in log and "契約書" not in log and leaks(log) == []


def test_the_detector_finds_what_it_must():
    """The grep is only worth something if it would have caught a leak."""
    for text in (
        "signing password QZ7XK93W rejected",
        "PIN: 7395",
        "暗証番号 6482",
        "verify pin=1111",
        "address 架空県幻影市霞町九丁目八番七号QXADDR5501",
    ):
        assert leaks(text), text
    for text in ("pid 7395", "serial 6482ab", "00200080047395", "tries left: 3"):
        assert not leaks(text), text
