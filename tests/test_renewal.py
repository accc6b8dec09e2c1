"""Which card is which: a renewal on the same card, a family's cards, and forgetting a card.

Cards are known by their authentication certificate, which a renewal replaces. The daemon links
new certificates to old ones only on evidence that they are on the same physical card: the
card's manufacture number (kept only as a salted hash). A second person's card is a second card
with its own reminders; a card whose number cannot be read is never linked by a guess.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from busstack import CallError, Daemon, PrivateBus, gdbus_call, status, wait_for
from test_daemon_dbus import ERR, wait_state
from test_daemon_notices import start_daemon, summaries

from mncd.core.cache import CardCache, CardRecord, CertificateRecord, card_id_for
from mncd.core.manager import CardManager
from mncd.jpki import certificates
from mncd.vcard import pki
from mncd.vcard.profile import CardProfile, stable_manufacture_number

ALICE = "Your user-authentication certificate expires in 20 days"
BOB = "Your user-authentication certificate expires in 5 days"
RENEWED = "Your certificates have been renewed"


def mncctl(
    address: str, *args: str, lang: str = "C.UTF-8", **extra: str
) -> subprocess.CompletedProcess:
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address, "LANG": lang, "LANGUAGE": "",
           **extra}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "mncd.cli.main", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def known_cards(address: str) -> dict[str, dict]:
    return {card["card_id"]: card for card in status(address)["cards"]}


def test_a_family_then_one_renewal_gives_each_person_their_reminders(
    desktop, sandbox, insert_card, tmp_path
):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path, lang="C")
    try:
        alice = insert_card(name="alice-card", not_after_days=20)
        alice_old = wait_state(bus.address, "card-present")["card_id"]
        wait_for(lambda: ALICE in summaries(server), "Alice's reminder")
        alice.remove()
        # Bob's card: the same CA, issued later, and Alice's card is due. Still Bob's card.
        bob = insert_card(name="bob-card", birth_date="1985-06-15", not_after_days=5)
        bob_id = wait_state(bus.address, "card-present")["card_id"]
        wait_for(lambda: BOB in summaries(server), "Bob's reminder")
        bob.remove()
        wait_state(bus.address, "no-card")
        assert server.live_count() == 2  # both reminders stay on screen
        assert RENEWED not in summaries(server)

        # Alice renews her certificates at the office: the same card, new certificates.
        renewed = insert_card(name="alice-card", generation=2, not_before_days=0,
                              not_after_days=1800)  # fmt: skip
        alice_new = wait_state(bus.address, "card-present")["card_id"]
        assert alice_new != alice_old
        wait_for(lambda: RENEWED in summaries(server), "the renewal notice")
        wait_for(lambda: server.live_count() == 2, "Alice's old reminder taken back")
        cards = known_cards(bus.address)
        assert set(cards) == {alice_old, alice_new, bob_id}
        assert cards[alice_old]["renewed_to"] == alice_new
        assert cards[bob_id]["renewed_to"] == "" and cards[alice_new]["renewed_to"] == ""
        got = summaries(server)
        assert (got.count(ALICE), got.count(BOB), got.count(RENEWED)) == (1, 1, 1)

        # mncctl status --details lists the other cards by id; Bob's card is forgotten by a
        # prefix.
        listing = mncctl(bus.address, "status", "--details")
        assert listing.returncode == 0, listing.stderr
        assert f"Card:             {alice_new}" in listing.stdout and bob_id in listing.stdout
        refused = mncctl(bus.address, "forget", alice_new)  # in the reader
        assert refused.returncode == 1
        assert refused.stderr == f"mncctl: Card {alice_new} is in the reader: take it out first.\n"
        unknown = mncctl(bus.address, "forget", "0123456789abcdef")
        assert unknown.returncode == 1
        assert "No card 0123456789abcdef is known: 'mncctl status' lists" in unknown.stderr
        malformed = mncctl(bus.address, "forget", "abc")
        assert malformed.returncode == 2 and "8 to 32 digits of 0-9 and a-f" in malformed.stderr
        japanese = mncctl(bus.address, "forget", alice_new, lang="ja_JP.UTF-8")
        assert japanese.stderr == (
            f"mncctl: カード {alice_new} はカードリーダーに挿さっています。"
            "取り出してから実行してください。\n"
        )
        # mncctl's own note of PIN changes (the one-time notice) forgets Bob's card too.
        note = tmp_path / "cli-state" / "mncd" / "cli-pin-changed"
        note.parent.mkdir(parents=True)
        note.write_text(f"{bob_id}\n{alice_new}\n")
        forgot = mncctl(bus.address, "forget", bob_id[:10], XDG_STATE_HOME=str(note.parent.parent))
        assert forgot.returncode == 0, forgot.stderr
        assert note.read_text() == f"{alice_new}\n" and note.stat().st_mode & 0o777 == 0o600
        assert forgot.stdout == (
            f"Forgot card {bob_id}: its certificates and reminders are removed.\n"
        )
        wait_for(lambda: server.live_count() == 1, "Bob's reminder taken back")
        assert bob_id not in known_cards(bus.address)
        assert not (tmp_path / "state" / "mncd" / "cards" / f"{bob_id}.json").exists()
        assert bob_id not in mncctl(bus.address, "status").stdout
        renewed.remove()

        # A restart checks every cached card again: nothing comes back, nothing repeats.
        daemon.stop()
        checks = daemon.log.count("notices checked")
        daemon.start()
        wait_for(lambda: daemon.log.count("notices checked") > checks, "a check after restart")
        assert summaries(server) == got
    finally:
        daemon.stop()
    # The manufacture number itself is nowhere: only its salted hash is kept.
    state = tmp_path / "state" / "mncd"
    numbers = [stable_manufacture_number(n) for n in ("alice-card", "bob-card")]
    for path in [*state.rglob("*"), daemon.log_path]:
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert not any(n in text for n in numbers), path
    assert (state / "salt").stat().st_mode & 0o777 == 0o600
    record = json.loads((state / "cards" / f"{alice_new}.json").read_text())
    assert len(record["manufacture_hash"]) == 32
    assert "Traceback" not in daemon.log


def test_a_card_whose_number_cannot_be_read_is_never_linked_by_a_guess(
    desktop, sandbox, insert_card, tmp_path
):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path, lang="C")
    try:
        old = insert_card(name="old-card", manufacture_record=False, not_after_days=20)
        old_id = wait_state(bus.address, "card-present")["card_id"]
        wait_for(lambda: ALICE in summaries(server), "the reminder")
        old.remove()
        insert_card(name="old-card", manufacture_record=False, generation=2,
                    not_before_days=0, not_after_days=1800)  # fmt: skip
        new_id = wait_state(bus.address, "card-present")["card_id"]
        checks = daemon.log.count("notices checked")
        wait_for(lambda: daemon.log.count("notices checked") > checks, "a check")
        cards = known_cards(bus.address)
        assert set(cards) == {old_id, new_id} and cards[old_id]["renewed_to"] == ""
        assert RENEWED not in summaries(server)
        assert server.live_count() == 1  # the old card's reminder stays: forget it to stop it
        # Forgotten after a restart: the new daemon withdraws what its predecessor showed.
        daemon.stop()
        checks = daemon.log.count("notices checked")
        daemon.start()
        wait_for(lambda: daemon.log.count("notices checked") > checks, "a check after restart")
        assert server.live_count() == 1 and summaries(server).count(ALICE) == 1
        forgot = mncctl(bus.address, "forget", old_id)
        assert forgot.returncode == 0, forgot.stderr
        wait_for(lambda: server.live_count() == 0, "the predecessor's reminder taken back")
        ids = json.loads((tmp_path / "state" / "mncd" / "notifications.json").read_text())
        assert ids["ids"] == {}
        assert (tmp_path / "state" / "mncd" / "notifications.json").stat().st_mode & 0o777 == 0o600
    finally:
        daemon.stop()


def _record(profile: CardProfile, manufacture_hash: str | None) -> CardRecord:
    der = pki.generate(profile).auth_certificate
    return CardRecord(
        card_id=card_id_for(der),
        auth=CertificateRecord(certificates.summarize(der), der),
        manufacture_hash=manufacture_hash,
    )


def test_old_cache_files_load_and_links_without_evidence_are_undone(tmp_path):
    cache = CardCache(tmp_path / "mncd")
    mine = _record(CardProfile(not_after_days=20), None)
    family = _record(CardProfile(not_after_days=1800, birth_date="1985-06-15"), None)
    proven_old = _record(CardProfile(not_after_days=10, generation=3), "ab" * 16)
    proven_new = _record(CardProfile(not_after_days=1800, generation=4), "ab" * 16)
    # A link the earlier daemon guessed (a family member's card), and one on evidence.
    mine.renewed_to, family.renewed_from = family.card_id, mine.card_id
    proven_old.renewed_to, proven_new.renewed_from = proven_new.card_id, proven_old.card_id
    for record in (mine, family, proven_old, proven_new):
        cache.save(record)
    # A file written before manufacture hashes existed loads as it is.
    path = cache.path_for(mine.card_id)
    data = json.loads(path.read_text())
    del data["manufacture_hash"]
    path.write_text(json.dumps(data))
    manager = CardManager(cache)
    asyncio.run(manager.start())
    assert cache.load(mine.card_id).renewed_to is None
    assert cache.load(family.card_id).renewed_from is None
    assert cache.load(proven_old.card_id).renewed_to == proven_new.card_id
    assert cache.load(proven_new.card_id).renewed_from == proven_old.card_id
    assert not (tmp_path / "mncd" / "salt").exists()  # made when a card is read, not at start
    assert len(manager.known) == 4


def test_forget_card_refuses_bad_input_and_changes_nothing(sandbox, insert_card, tmp_path):
    bus = PrivateBus(tmp_path)
    daemon = Daemon(bus, sandbox.env, tmp_path / "state").start()
    try:
        card = insert_card()
        card_id = wait_state(bus.address, "card-present")["card_id"]
        card.remove()
        wait_state(bus.address, "no-card")
        for args in (
            (card_id, "{'force': <true>}"),  # no options yet
            ("ABCDEF0123", "@a{sv} {}"),  # not lower-case hex
            (card_id[:7], "@a{sv} {}"),  # too short to name one card
            ("../../etc/passwd", "@a{sv} {}"),
            ("0" * 32, "@a{sv} {}"),  # no such card
        ):
            with pytest.raises(CallError) as err:
                gdbus_call(bus.address, "ForgetCard", *args)
            assert err.value.name == ERR + "InvalidArgument", err.value.message
        with pytest.raises(CallError) as err:
            gdbus_call(bus.address, "ForgetCard", "int32 5", "@a{sv} {}")  # wrong types
        assert err.value.name == ERR + "InvalidArgument"
        assert card_id in known_cards(bus.address)
        assert (tmp_path / "state" / "mncd" / "cards" / f"{card_id}.json").exists()
        out = gdbus_call(bus.address, "ForgetCard", card_id, "@a{sv} {}")
        assert card_id in out
        assert known_cards(bus.address) == {} and status(bus.address)["card_id"] == ""
    finally:
        daemon.stop()
        bus.stop()
    assert "Traceback" not in daemon.log
