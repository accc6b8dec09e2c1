"""RFC 3161 timestamps over HTTP for PAdES B-T and CAdES-T signatures: the authority is asked
once before the signing password (is it there, how large is its answer), then once for the
signature."""

from __future__ import annotations

from pyhanko.sign.timestamps import HTTPTimeStamper, TimestampRequestError

from mncd.documents.errors import DocumentError
from mncd.documents.text import _

#: Seconds to wait for the timestamp authority.
TIMEOUT = 20


def timestamper(url: str | None) -> HTTPTimeStamper | None:
    """pyHanko's HTTP time stamper for ``url`` (None without one)."""
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise DocumentError(
            _("{url} is not an http:// or https:// address of a timestamp authority.").format(
                url=url
            )
        )
    return HTTPTimeStamper(url, timeout=TIMEOUT)


async def check_authority(url: str) -> None:
    """Ask the timestamp authority at ``url`` for one timestamp, before any password: a
    :class:`DocumentError` saying what is wrong when it does not answer properly."""
    stamper = timestamper(url)
    assert stamper is not None
    try:
        await stamper.async_dummy_response("sha256")
    except (TimestampRequestError, Exception) as exc:  # aiohttp's, the TSA's, the network's
        raise DocumentError(
            _(
                "The timestamp authority at {url} did not give a timestamp ({detail}): check the "
                "address and your network. Nothing was signed."
            ).format(url=url, detail=str(exc) or type(exc).__name__)
        ) from None
