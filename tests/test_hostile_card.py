"""A hostile card: answers mangled at random — truncated or padded data, garbage certificates,
odd status words, endless 61xx / 6Cxx, slow answers.

In-process, hypothesis drives the card layer and the card operations the daemon runs against a
virtual card whose answers it mangles: only typed errors may come out, and every operation ends
within a bounded number of APDUs. Through the stack, virtual cards with the ``hostile`` profile
setting meet the daemon: it never crashes or hangs, and says ``unknown-card`` (answers, but not
as a My Number Card), ``unreadable-card`` (no usable answer after several tries) or a typed
error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import faultstats
import pytest
from busstack import CallError, status, wait_for
from faultkit import ERR, SECRET_CARD, Stack, authenticate, sign
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mncd.card.errors import CardError
from mncd.card.jpki import AUTH_KEY, SIGN_KEY
from mncd.card.pin import CARD_INFO_PIN, SIGN_PASSWORD
from mncd.core import operations
from mncd.core.cache import card_id_for
from mncd.core.errors import LastTryError
from mncd.core.events import CardRef
from mncd.core.pingate import PinTicket
from mncd.jpki import certificates, signatures
from mncd.jpki.signatures import SignatureMismatch
from mncd.vcard import pki
from mncd.vcard.card import ODD_STATUS, VirtualCard
from mncd.vcard.profile import CardProfile

#: More APDUs than any operation needs, even following 61xx to the protocol's limit.
MAX_APDUS = 400
PROFILE = CardProfile.from_dict({**CardProfile().to_dict(), **SECRET_CARD})

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 300)),
    st.tuples(st.just("pad"), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("garbage"), st.binary(max_size=300)),
    st.tuples(st.just("der"), st.binary(min_size=2, max_size=40)),
    st.tuples(st.just("status"), st.sampled_from(ODD_STATUS) | st.integers(0, 0xFFFF)),
    st.tuples(st.just("61xx"), st.integers(0, 255)),
    st.tuples(st.just("6cxx"), st.integers(0, 255)),
)
#: Which answers (by position) to mangle, and how; everything else is the honest card's.
mutations = st.dictionaries(st.integers(0, 40), mutation, max_size=6)


class HostileConnection:
    """The virtual card in-process, with some answers replaced; implements CardConnection."""

    def __init__(self, card: VirtualCard, plan: dict[int, tuple[str, object]]) -> None:
        self.card = card
        self.plan = plan
        self.count = 0
        self.atr = card.atr
        self.endless = False

    def transmit(self, apdu: bytes) -> bytes:
        self.count += 1
        assert self.count <= MAX_APDUS, "the card layer keeps talking to a broken card"
        response = self.card.process(apdu)
        if self.endless and apdu[1] == 0xC0:
            return b"\x61\x10"
        what = self.plan.get(self.count - 1)
        if what is None:
            return response
        kind, value = what
        data, sw = response[:-2], response[-2:]
        if kind == "truncate":
            return response[: value % max(len(response), 1)]
        if kind == "pad":
            return data + value + sw
        if kind == "garbage":
            return value + sw
        if kind == "der":
            return b"\x30\x82" + value + b"\x90\x00"
        if kind == "status":
            return data + value.to_bytes(2, "big")
        if kind == "61xx":
            self.endless = True
            return bytes((0x61, value))
        return bytes((0x6C, value))  # 6cxx

    @contextlib.contextmanager
    def transaction(self, reset_after: bool = False) -> Iterator[HostileConnection]:
        yield self
        if reset_after:
            self.card.reset()

    def card_events(self) -> int:
        return 1  # one card, never swapped

    def __enter__(self) -> HostileConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class HostileContext:
    def __init__(self, connection: HostileConnection) -> None:
        self.connection = connection

    def connect(self, reader: str) -> HostileConnection:
        return self.connection


@pytest.fixture(scope="module")
def card_pki() -> pki.CardPki:
    return pki.generate(PROFILE)


def hostile(card_pki: pki.CardPki, plan: dict) -> HostileConnection:
    card = VirtualCard(PROFILE, card_pki)
    card.insert()
    return HostileConnection(card, plan)


TYPED = (CardError, certificates.CertificateError, SignatureMismatch, LastTryError)
CARD = CardRef("reader", 1)

fuzz = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same cases on every run: a failure here is reproducible
)


@fuzz
@given(plan=mutations)
def test_read_on_insertion(card_pki, plan):
    """What the daemon does on insertion: read the card, then summarize what it read."""
    connection = hostile(card_pki, plan)
    try:
        snapshot = operations.read_card(HostileContext(connection), "reader", bytes(32))
        if snapshot.auth_der is not None:
            card_id_for(snapshot.auth_der)
        for der in (snapshot.auth_der, snapshot.auth_ca_der, snapshot.sign_ca_der):
            if der is not None:
                certificates.summarize(der)
    except TYPED:
        pass
    faultstats.add("fuzz_in_process")


@fuzz
@given(plan=mutations, which=st.sampled_from(["auth", "sign", "sign-known"]))
def test_sign(card_pki, plan, which):
    """VERIFY + SIGN (+ reading the signing certificate), and verifying the answer."""
    connection = hostile(card_pki, plan)
    key = AUTH_KEY if which == "auth" else SIGN_KEY
    pin = bytearray((PROFILE.auth_pin if which == "auth" else PROFILE.sign_password).encode())
    known = {"auth": card_pki.auth_certificate, "sign-known": card_pki.sign_certificate}
    digest = bytes(range(32))
    ticket = PinTicket(key.pin, pin, CARD, last_try=True)
    try:
        result = operations.sign(
            HostileContext(connection), key, "sha256", digest, ticket, known.get(which),
            card_pki.sign_ca_certificate,
        )  # fmt: skip
    except TYPED:
        pass
    else:
        # Whatever the card said, what comes back verifies against the card's real certificate.
        expected = card_pki.auth_certificate if which == "auth" else card_pki.sign_certificate
        assert result.certificate == expected
    verifies = [e for e in connection.card.log if e.command.startswith("00200080")]
    assert len([e for e in verifies if len(e.command) > 8]) <= 1  # never a second VERIFY
    faultstats.add("fuzz_in_process")


@fuzz
@given(plan=mutations)
def test_personal_data_check(card_pki, plan):
    """The card-info AP's basic four information, never the individual number."""
    connection = hostile(card_pki, plan)
    context = HostileContext(connection)
    with contextlib.suppress(TYPED):
        sign = PinTicket(SIGN_PASSWORD, bytearray(b"QZ7XK93W"), CARD, last_try=True)
        certificate = operations.read_sign_certificate(context, sign)
        card_info = PinTicket(CARD_INFO_PIN, bytearray(b"6482"), CARD, last_try=True)
        info = operations.read_personal_data(context, card_info)
        operations.changed_personal_data(certificate, info)
    assert not any(e.command == "00A4020C020001" for e in _card_info_part(connection.card.log))
    faultstats.add("fuzz_in_process")


def _card_info_part(log: list) -> list:
    out, inside = [], False
    for entry in log:
        if entry.command.startswith("00A4040C"):
            inside = entry.command.endswith("D3921000310001010408")
        elif inside:
            out.append(entry)
    return out


@fuzz
@given(
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=8),
)
def test_garbage_certificates(card_pki, cut, flips):
    """A certificate with bytes flipped or cut short: summarized, or a CertificateError."""
    der = bytearray(card_pki.auth_certificate)
    for position, xor in flips:
        der[position % len(der)] ^= xor
    with contextlib.suppress(certificates.CertificateError):
        certificates.summarize(bytes(der[: max(cut, 1)] if cut < len(der) else der))
    faultstats.add("fuzz_in_process")


# -- through the stack ----------------------------------------------------------------------

SEEDS = [(seed, round(0.01 + 0.015 * (seed % 5), 3)) for seed in range(1, 17)]
FINAL = {"card-present", "unknown-card", "unreadable-card"}


@pytest.fixture(scope="module")
def stack(sandbox, tmp_path_factory):
    # A card that stops answering (vpcd waits forever for an answer that never comes) costs
    # each caller the card timeout: keep it short here.
    running = Stack(tmp_path_factory.mktemp("hostile"), sandbox.env)
    running.start(extra_env={"MNCD_CARD_TIMEOUT": "4"})
    yield running
    log = running.daemon.log
    running.close()
    assert "Traceback" not in log and "internal error" not in log


def settled(stack: Stack) -> dict:
    """GetStatus once the read on insertion has ended, one way or the other."""

    def done() -> dict | None:
        s = status(stack.address)
        if s["state"] in ("unknown-card", "unreadable-card") or (
            s["state"] == "card-present" and s["auth"]["source"] == "card"
        ):
            return s
        return None

    return wait_for(done, "the hostile card to be read or refused", timeout=60)


@pytest.mark.parametrize(("seed", "rate"), SEEDS, ids=[f"seed{s}-{r}" for s, r in SEEDS])
def test_hostile_card_through_the_daemon(stack, insert_card, seed, rate):
    card = insert_card(**SECRET_CARD, hostile=seed, hostile_rate=rate)
    s = settled(stack)
    outcomes = [s["state"]]
    for call in (
        lambda: authenticate(stack.address, SECRET_CARD["auth_pin"]),
        lambda: sign(stack.address, SECRET_CARD["sign_password"]),
    ):
        started = time.monotonic()
        try:
            call()  # a success is a signature that verified against the returned certificate
            outcomes.append("ok")
        except CallError as exc:
            assert exc.name.startswith(ERR), exc.message  # typed, never a timeout
            outcomes.append(exc.name.removeprefix(ERR))
        assert time.monotonic() - started < 20  # the card timeout, twice at most
        assert status(stack.address)["state"] in FINAL | {"no-card"}
    card.remove()
    stack.wait_state("no-card")
    assert stack.daemon.process.poll() is None
    faultstats.add("fuzz_stack")
    faultstats.fault()
    print(f"seed {seed} rate {rate}: {outcomes}")


@pytest.mark.parametrize(
    "oid",
    ["2a864886f70d010102", "2a8648ce3d0201", "2b6570", "2a864886f70d01010a"],
    ids=["unknown-rsa-variant", "ec-without-curve", "ed25519-oid-on-rsa-key", "rsassa-pss"],
)
def test_certificate_with_an_unusable_key(card_pki, oid):
    """A certificate whose key algorithm is swapped: a CertificateError, never anything else."""
    der = card_pki.auth_certificate
    rsa_oid = bytes.fromhex("2a864886f70d010101")
    i = der.index(rsa_oid)
    new_oid = bytes.fromhex(oid)
    swapped = der[: i - 1] + bytes((len(new_oid),)) + new_oid + der[i + len(rsa_oid) :]
    # Lengths of the enclosing structures change with the OID: patch them or accept a parse
    # error; both must come out as CertificateError.
    for candidate in (swapped, der[:i] + new_oid[: len(rsa_oid)].ljust(9, b"\x01") + der[i + 9 :]):
        with contextlib.suppress(certificates.CertificateError):
            certificates.summarize(candidate)
        with contextlib.suppress(certificates.CertificateError):
            signatures.card_input(candidate, "sha256", bytes(32))
        faultstats.add("fuzz_in_process")
