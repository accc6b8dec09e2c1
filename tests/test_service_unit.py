"""The pre-marshalled GetStatus reply is byte-for-byte what dbus-next would send."""

from __future__ import annotations

from dbus_next import Message, Variant
from dbus_next._private.marshaller import Marshaller

from mncd.dbus.bus import PreMarshalledReply, method_call


def test_premarshalled_reply_matches_dbus_next():
    call = method_call(
        "io.github.mncd.MyNumberCard1",
        "/io/github/mncd/MyNumberCard1",
        "io.github.mncd.MyNumberCard1",
        "GetStatus",
    )
    call.serial = 41
    call.sender = ":1.7"
    status = {
        "state": Variant("s", "card-present"),
        "auth": Variant("a{sv}", {"days_left": Variant("i", 1460), "present": Variant("b", True)}),
        "readers": Variant("as", ["Virtual PCD 00 00"]),
    }
    body = Marshaller("a{sv}", [status])
    body.marshall()
    ours = PreMarshalledReply(call, "a{sv}", bytes(body.buffer))
    theirs = Message.new_method_return(call, "a{sv}", [status])
    ours.serial = theirs.serial = 99
    assert ours._marshall() == bytes(theirs._marshall())
