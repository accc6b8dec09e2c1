"""The daemon's desktop notices, shown by a real notification server (dunst on Xvfb)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from busstack import CallError, Daemon, PrivateBus, gdbus_call, gvariant_bytes, status, wait_for
from notifyserver import NotifyServer
from test_daemon_dbus import ERR, auth_call, wait_state

from mncd.vcard.profile import CardProfile


def start_daemon(bus, sandbox, tmp_path, lang: str = "ja_JP.UTF-8") -> Daemon:
    env = {**sandbox.env, "LANG": lang, "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""}
    return Daemon(bus, env, tmp_path / "state").start()


def files_selected(commands: list[str]) -> set[tuple[str, str]]:
    """(application AID, EF) pairs the card was asked to select."""
    selected, application = set(), ""
    for command in commands:
        if command.startswith("00A4040C"):
            application = command[10:]
        elif command.startswith("00A4020C02"):
            selected.add((application, command[10:14]))
    return selected


def summaries(server: NotifyServer) -> list[str]:
    return [n["summary"] for n in server.received()]


def test_expiry_milestones_once_each_across_restart_and_reinsertion(
    desktop, sandbox, insert_card, tmp_path
):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path)
    cards = {}
    try:
        for days in (100, 60, 20, 5, 0):
            card = insert_card(name=f"expires-in-{days}", not_after_days=days)
            wait_state(bus.address, "card-present")
            cards[days] = card
            card.remove()
        expires_today = CardProfile(not_after_days=0).validity()[1]
        expired = dt.datetime.now(dt.UTC) > expires_today
        last = "の有効期限が切れました" if expired else "の有効期限は今日までです"
        expected = [
            "利用者証明用電子証明書の更新手続きができるようになりました",  # 60 days: renewal opens
            "利用者証明用電子証明書の有効期限まであと20日です",  # 20 days: the 30-day notice only
            "利用者証明用電子証明書の有効期限まであと5日です",  # 5 days: the 7-day notice
            last,
        ]

        def all_shown():
            got = summaries(server)
            return got if len(got) >= len(expected) else None

        got = wait_for(all_shown, "four expiry notices")
        assert got[:3] == expected[:3] and last in got[3]
        assert len(got) == 4  # the 100-day card gets none; none are repeated
        received = server.received()
        assert received[1]["urgency"] == "NORMAL" and received[2]["urgency"] == "CRITICAL"
        assert all(n["appname"] == "mncd" for n in received)

        daemon.stop()
        daemon.start()
        for card in cards.values():
            card.reinsert()
            wait_state(bus.address, "card-present")
            checks = daemon.log.count("notices checked")
            card.remove()
            wait_for(lambda c=checks: daemon.log.count("notices checked") > c, "a notice check")
        assert len(summaries(server)) == 4  # restart and re-insertion repeat nothing
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log


def test_changed_address_invalidates_the_signing_certificate(
    desktop, sandbox, insert_card, tmp_path
):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path)
    try:
        card = insert_card(
            address="大阪府大阪市北区中之島一丁目三番二十号",
            cert_address="東京都千代田区千代田一丁目一番地",
        )
        wait_state(bus.address, "card-present")
        card.commands(clear=True)
        output = gdbus_call(
            bus.address, "CheckPersonalData",
            f"{{'pin': <'{card.profile.card_info_pin}'>, "
            f"'sign-pin': <'{card.profile.sign_password}'>}}",
        )  # fmt: skip
        assert "'matches': <false>" in output and "'changed': <['address']>" in output
        assert status(bus.address)["sign"]["state"] == "invalidated"
        notice = wait_for(
            lambda: next((n for n in server.received() if "失効" in n["summary"]), None),
            "the invalidation notice",
        )
        assert notice["summary"] == "署名用電子証明書が失効しました"
        assert notice["urgency"] == "CRITICAL" and "住所" in notice["body"]
        assert "大阪" not in notice["body"] and "東京" not in notice["body"]
        # The card-info AP was used, and its individual-number EF (0001) never selected.
        assert ("D3921000310001010408", "0002") in files_selected(card.commands())
        assert ("D3921000310001010408", "0001") not in files_selected(card.commands())
        log = daemon.log
        assert "大阪" not in log and card.profile.sign_password not in log
        # A restart checks again from the cache, and does not repeat the notice.
        daemon.stop()
        checks = daemon.log.count("notices checked")
        daemon.start()
        wait_for(lambda: daemon.log.count("notices checked") > checks, "a check after restart")
        assert status(bus.address)["sign"]["state"] == "invalidated"
    finally:
        daemon.stop()
    assert len([s for s in summaries(server) if "失効" in s]) == 1


def test_replaced_signing_certificate(desktop, sandbox, insert_card, tmp_path):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path, lang="C")
    sign = ("Sign", gvariant_bytes(b"doc"), "sha256")
    try:
        card = insert_card()
        wait_state(bus.address, "card-present")
        gdbus_call(bus.address, *sign, f"{{'pin': <'{card.profile.sign_password}'>}}")
        old = status(bus.address)["sign"]["fingerprint"]
        card.remove()
        card.control.renew_signing_certificate(card.name)
        card.reinsert()
        wait_state(bus.address, "card-present")
        gdbus_call(bus.address, *sign, f"{{'pin': <'{card.profile.sign_password}'>}}")
        notice = wait_for(
            lambda: next((n for n in server.received() if "new signing" in n["summary"]), None),
            "the replacement notice",
        )
        # A renewal that worked is good news first: not a red notice about revocation.
        assert notice["summary"] == "A new signing certificate was found on your card"
        assert notice["urgency"] != "CRITICAL"
        assert notice["body"].startswith("The signing certificate used before is no longer valid")
        assert not [n for n in server.received() if "no longer valid" in n["summary"]]
        now = status(bus.address)["sign"]
        assert now["fingerprint"] != old and now["state"] == "valid"
        assert now["previous_fingerprint"] == old and now["previous_state"] == "invalidated"
    finally:
        daemon.stop()


def test_blocked_pin_notice_in_english(desktop, sandbox, insert_card, tmp_path):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path, lang="C")
    try:
        insert_card(auth_tries_left=1)
        wait_state(bus.address, "card-present")
        with pytest.raises(CallError) as err:
            auth_call(daemon, "0000", allow_last_try=True)
        assert ERR + "PinBlocked" in err.value.message
        notice = wait_for(
            lambda: next((n for n in server.received() if "locked" in n["summary"]), None),
            "the blocked-PIN notice",
        )
        assert notice["summary"] == "The user-authentication PIN is locked"
        assert "municipal office" in notice["body"] and notice["urgency"] == "CRITICAL"
    finally:
        daemon.stop()


def test_the_lock_notice_goes_once_the_office_has_reset_the_pin(
    desktop, sandbox, insert_card, tmp_path
):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path, lang="C")
    try:
        card = insert_card(auth_tries_left=0)
        wait_state(bus.address, "card-present")
        wait_for(
            lambda: any(n["summary"] == "The user-authentication PIN is locked"
                        for n in server.received()),
            "the lock notice",
        )  # fmt: skip
        wait_for(lambda: server.live_count() == 1, "the lock notice on screen")
        card.remove()
        card.control.reset_pin("auth", card.name)  # at the municipal office
        card.reinsert()
        wait_state(bus.address, "card-present")
        wait_for(lambda: status(bus.address)["auth"]["pin_tries_left"] == 3, "a full counter")
        wait_for(lambda: server.live_count() == 0, "the lock notice withdrawn")
    finally:
        daemon.stop()


def test_notice_waits_for_a_notification_server(sandbox, insert_card, tmp_path):
    bus = PrivateBus(tmp_path)
    server = NotifyServer(tmp_path, bus.address)
    daemon = start_daemon(bus, sandbox, tmp_path)
    try:
        insert_card(not_after_days=20)
        wait_state(bus.address, "card-present")
        wait_for(lambda: "notice:" in daemon.log, "the daemon to decide on a notice")
        server.start()  # the server appears later: the waiting notice is shown
        got = wait_for(lambda: summaries(server), "the pending notice")
        assert got == ["利用者証明用電子証明書の有効期限まであと20日です"]
        assert daemon.process is not None and daemon.process.poll() is None
    finally:
        daemon.stop()
        server.stop()
        bus.stop()


def test_a_notice_no_server_took_survives_a_restart_and_is_shown_once(
    sandbox, insert_card, tmp_path
):
    bus = PrivateBus(tmp_path)
    server = NotifyServer(tmp_path, bus.address)
    daemon = start_daemon(bus, sandbox, tmp_path)
    notices_file = tmp_path / "state" / "mncd" / "notices.json"
    try:
        card = insert_card(not_after_days=20)
        wait_state(bus.address, "card-present")
        wait_for(lambda: "notice:" in daemon.log, "the daemon to decide on a notice")
        card.remove()
        wait_state(bus.address, "no-card")
        # Not shown, so not marked shown: what was only queued is still due on disk.
        fingerprint = status(bus.address)["auth"]["fingerprint"]
        recorded = json.loads(notices_file.read_text()) if notices_file.exists() else {}
        assert "30" not in recorded.get(fingerprint, [])
        daemon.stop()  # the in-memory queue is gone with the process
        daemon.start()
        wait_for(lambda: daemon.log.count("notice:") >= 2, "the notice due again after restart")
        server.start()  # a server appears: shown now, once
        got = wait_for(lambda: summaries(server), "the waiting notice")
        assert got == ["利用者証明用電子証明書の有効期限まであと20日です"]
        wait_for(lambda: "30" in json.loads(notices_file.read_text()).get(fingerprint, []),
                 "the notice recorded as shown")  # fmt: skip
        assert notices_file.stat().st_mode & 0o777 == 0o600
        # Shown means done: another restart, a re-insertion, repeat nothing.
        daemon.stop()
        checks = daemon.log.count("notices checked")
        daemon.start()
        card.reinsert()
        wait_state(bus.address, "card-present")
        wait_for(lambda: daemon.log.count("notices checked") > checks, "a check after restart")
        assert len(server.received()) == 1
    finally:
        daemon.stop()
        server.stop()
        bus.stop()


def test_card_refusing_the_signing_key_invalidates_it(desktop, sandbox, insert_card, tmp_path):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path, lang="C")
    try:
        card = insert_card(refuse_key="sign")
        wait_state(bus.address, "card-present")
        with pytest.raises(CallError) as err:
            gdbus_call(bus.address, "Sign", gvariant_bytes(b"doc"), "sha256",
                       f"{{'pin': <'{card.profile.sign_password}'>}}")  # fmt: skip
        assert ERR + "CertificateInvalid" in err.value.message
        assert status(bus.address)["sign"]["state"] == "invalidated"
        assert status(bus.address)["auth"]["state"] == "valid"
        notice = wait_for(
            lambda: next((n for n in server.received() if "no longer valid" in n["summary"]), None),
            "the invalidation notice",
        )
        assert notice["urgency"] == "CRITICAL" and "municipal office" in notice["body"]
    finally:
        daemon.stop()


def test_renewed_card_takes_over_and_the_old_reminders_stop(
    desktop, sandbox, insert_card, tmp_path
):
    bus, server = desktop
    daemon = start_daemon(bus, sandbox, tmp_path, lang="C")
    try:
        old = insert_card(name="my-card", not_after_days=20)
        wait_state(bus.address, "card-present")
        wait_for(lambda: "expires in 20 days" in " ".join(summaries(server)), "the 20-day notice")
        old.remove()
        # The office renews the certificates on the same card: new keys and certificates, valid
        # for years; the card itself (its manufacture number) is the same.
        insert_card(name="my-card", generation=2, not_before_days=0, not_after_days=1800)
        wait_state(bus.address, "card-present")
        wait_for(lambda: "Your certificates have been renewed" in summaries(server), "renewed")
        # A restart checks every cached card again: the old card's reminder does not come back.
        daemon.stop()
        checks = daemon.log.count("notices checked")
        daemon.start()
        wait_for(lambda: daemon.log.count("notices checked") > checks, "a check after restart")
        got = summaries(server)
        assert got.count("Your user-authentication certificate expires in 20 days") == 1
        assert got.count("Your certificates have been renewed") == 1
        assert server.live_count() == 1  # the old reminder was taken back; the renewal stays
    finally:
        daemon.stop()


def test_settings_problems_are_told_once_and_again_when_they_change(desktop, sandbox, tmp_path):
    bus, server = desktop
    config = tmp_path / "config" / "mncd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[notifications]\nthresholds = "soon"\nexpiry = false\n[pinentri]\n')
    env = {**sandbox.env, "LANG": "ja_JP.UTF-8", "LANGUAGE": "", "LC_ALL": "",
           "LC_MESSAGES": "", "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
    daemon = Daemon(bus, env, tmp_path / "state").start()
    try:
        notice = wait_for(lambda: next(iter(server.received()), None), "the settings notice")
        assert notice["summary"] == "使用できない設定があります"
        assert f"{config}にmncdが使用できない設定があります" in notice["body"]
        assert "mncctl doctor" in notice["body"]
        assert "settings: unknown section [pinentri] ignored" in daemon.log
        # The same problems after a restart: not told again.
        daemon.stop()
        checks = daemon.log.count("notices checked")
        daemon.start()
        wait_for(lambda: daemon.log.count("notices checked") > checks, "a check after restart")
        assert len(server.received()) == 1
        # Different problems: told again, once.
        config.write_text("[pkcs11]\nlogin-timeout = -5\n")
        daemon.stop()
        daemon.start()
        wait_for(lambda: len(server.received()) == 2, "the notice for the new problems")
        assert server.received()[1]["summary"] == "使用できない設定があります"
        # Fixed: nothing to tell, and the same problems later are news again.
        config.write_text("[pkcs11]\nlogin-timeout = 60\n")
        daemon.stop()
        checks = daemon.log.count("notices checked")
        daemon.start()
        wait_for(lambda: daemon.log.count("notices checked") > checks, "a check after the fix")
        assert len(server.received()) == 2
        notices_file = tmp_path / "state" / "mncd" / "notices.json"
        assert "settings" not in json.loads(notices_file.read_text())
    finally:
        daemon.stop()
