"""``digest-from``: the digest a document signature needs, asked of the caller once the signing
certificate is known (after the password, in the same card transaction)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dbus_next.aio import MessageBus

from mncd.api import DIGEST_INTERFACE, DIGEST_TIMEOUT
from mncd.card.digestinfo import digest_size
from mncd.core.errors import DigestUnavailableError
from mncd.dbus.bus import CallError, call


def digest_from(
    bus: MessageBus, sender: str, source: str, hash_name: str
) -> Callable[[bytes], Awaitable[bytes]]:
    """A coroutine function giving the ``hash_name`` digest for a certificate: it calls
    ``Digest(certificate, hash)`` on the caller's object ``source`` (only the caller ``sender``
    is asked); a refusal, a timeout or an answer of the wrong shape is
    :class:`~mncd.core.errors.DigestUnavailableError` (nothing is signed)."""

    async def digest_for(certificate: bytes) -> bytes:
        try:
            reply = await call(
                bus, sender, source, DIGEST_INTERFACE, "Digest", "ays",
                [certificate, hash_name], timeout=DIGEST_TIMEOUT,
            )  # fmt: skip
        except CallError as exc:
            raise DigestUnavailableError(
                exc.text or "the caller did not give the digest to sign"
            ) from None
        body = reply.body
        if reply.signature != "ay" or len(body[0]) != digest_size(hash_name):
            raise DigestUnavailableError(f"the caller's answer is not a {hash_name} digest")
        return bytes(body[0])

    return digest_for
