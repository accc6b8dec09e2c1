"""The PKCS#11 socket's connections: silent ones are closed after the idle timeout (shortened
here) and lock no application out; at the bound the connection idle longest makes room, and a
newcomer is refused (the log says why) only when every connection has a call under way. A call
in progress, and an initialized application between calls, are never cut off for idleness."""

from __future__ import annotations

import json
import os
import select
import socket

from busstack import wait_for
from pkcs11stack import AUTH_SLOT, AUTH_TOKEN, SIGN_SLOT, pkcs11_daemon, wait_for_token
from test_pkcs11_fuzz import INITIALIZE, RawClient, request, u, u32

from mncd.pkcs11.constants import CKR
from mncd.pkcs11.server import MAX_CONNECTIONS

#: $MNCD_PKCS11_IDLE_TIMEOUT of the first test (seconds).
IDLE = 10


def silent(path: str, handshake: bool) -> socket.socket:
    """A connection that never calls (``handshake``: after offering the protocol version)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    if handshake:
        sock.sendall(b"\x02")
    return sock


def ended(sock: socket.socket) -> bool:
    """Whether the daemon has closed ``sock`` (what it sent before is read and dropped)."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(4096):
                return True
        except ConnectionResetError:
            return True
    return False


def blocked_in_a_call(path: str) -> tuple[RawClient, int]:
    """An application waiting in C_WaitForSlotEvent, and that call's message id."""
    client = RawClient(path)
    assert client.call(INITIALIZE)[0] == CKR.OK
    waiting = client.send(request("C_WaitForSlotEvent", u(0)))
    # Answered before the wait: the daemon has the wait under way.
    assert client.call(request("C_GetInfo"))[0] == CKR.OK
    return client, waiting


def test_silent_connections_lock_no_one_out_and_are_closed_when_idle(tmp_path, sandbox, card):
    env = {**sandbox.env, "MNCD_PKCS11_IDLE_TIMEOUT": str(IDLE)}
    with pkcs11_daemon(tmp_path, env) as served:
        wait_for_token(served)
        path = str(served.socket)
        waiting = served.start_application([["wait", {}], ["slots", {}]])
        wait_for(lambda: "pkcs11_client.py" in served.daemon.log, "the waiting application")
        initialized = RawClient(path)
        assert initialized.call(INITIALIZE)[0] == CKR.OK
        sockets = [silent(path, handshake=n % 2 == 0) for n in range(MAX_CONNECTIONS)]
        try:
            # More connections than the bound: the silent ones idle longest made room, for each
            # other and for a real application.
            listing = served.tool("-L")
            assert listing.returncode == 0, listing.stderr
            assert f"token label        : {AUTH_TOKEN}" in listing.stdout
            assert "closed to make room for /usr/bin/pkcs11-tool" in served.daemon.log

            wait_for(lambda: all(ended(s) for s in sockets), "the silent connections' end", 90)
            me = f"process {os.getpid()} ended:"
            closed = [line for line in served.daemon.log.splitlines()
                      if "PKCS#11: the connection of" in line and me in line]  # fmt: skip
            assert len(closed) == MAX_CONNECTIONS, closed  # each silent one, once, named
            why = f"ended: not initialized, no call for {IDLE} s"
            timed_out = [line for line in closed if line.endswith(why)]
            assert len(timed_out) >= MAX_CONNECTIONS - 3, closed  # the others made room

            # Idle as long, but initialized: still served (p11-kit's client never reconnects).
            assert initialized.call(request("C_GetInfo"))[0] == CKR.OK
            # Blocked in a call all along: it survived the idle timeout and gets its event.
            card.remove()
            out, err = waiting.communicate(timeout=60)
            answer = json.loads(out)
            assert "error" not in answer, (out, err)
            event, _slots = answer["results"]
            assert event in (AUTH_SLOT, SIGN_SLOT)
        finally:
            for sock in sockets:
                sock.close()
            initialized.close()
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()


def test_at_the_bound_calls_under_way_are_kept_and_a_newcomer_refused(tmp_path, sandbox, card):
    with pkcs11_daemon(tmp_path, sandbox.env) as served:
        wait_for_token(served)
        path = str(served.socket)
        waiting = [blocked_in_a_call(path) for _ in range(MAX_CONNECTIONS - 1)]
        idle = RawClient(path)
        try:
            assert idle.call(INITIALIZE)[0] == CKR.OK
            # The bound is reached: the idle application makes room, though it connected last;
            # none of those with a call under way is touched.
            listing = served.tool("-L")
            assert listing.returncode == 0, listing.stderr
            assert ended(idle.sock)
            assert not any(ended(client.sock) for client, _ in waiting)
            log = served.daemon.log
            assert f"process {os.getpid()} ended: idle for " in log
            assert "closed to make room for /usr/bin/pkcs11-tool" in log

            # Every connection with a call under way: the newcomer is refused, saying why.
            waiting.append(blocked_in_a_call(path))
            refused = served.tool("-L")
            assert refused.returncode != 0
            assert (
                f"PKCS#11: {MAX_CONNECTIONS} applications connected, each with a call under way "
                f"({MAX_CONNECTIONS} at most); refused /usr/bin/pkcs11-tool" in served.daemon.log
            )

            # The waits go on: the card's removal answers each of them.
            card.remove()
            for client, message_id in waiting:
                answered, reply = client.receive()
                assert answered == message_id and reply[:4] != u32(0), reply.hex()
        finally:
            for client, _ in waiting:
                client.close()
            idle.close()
