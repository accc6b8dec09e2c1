"""The cache under attack and under crashes: truncated, corrupted, wrong-permission,
foreign-owned and strange files are detected and moved aside, never trusted and never a crash;
a SIGKILL in the middle of a write leaves the old or the new version, never a mix."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import faultstats
import pytest
from busstack import wait_for
from faultkit import SECRET_CARD, Stack, check_cache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mncd.core.cache import CardCache, CardRecord, CertificateRecord, card_id_for
from mncd.jpki import certificates
from mncd.vcard import pki
from mncd.vcard.profile import CardProfile


@pytest.fixture(scope="module")
def card_pki() -> pki.CardPki:
    return pki.generate(CardProfile.from_dict({**CardProfile().to_dict(), **SECRET_CARD}))


def record_for(card_pki: pki.CardPki, tries: int = 3) -> CardRecord:
    der = card_pki.auth_certificate
    return CardRecord(
        card_id=card_id_for(der),
        auth=CertificateRecord(certificates.summarize(der), der),
        sign_ca=CertificateRecord(
            certificates.summarize(card_pki.sign_ca_certificate), card_pki.sign_ca_certificate
        ),
        sign=CertificateRecord(certificates.summarize(card_pki.sign_certificate)),  # summary only
        pin_tries={"auth": tries, "sign": 5},
    )


def quarantined(cards: Path, name: str) -> list[str]:
    return [p.name for p in cards.iterdir() if p.name.startswith(name + ".")]


def plant(cache: CardCache, name: str, how: str, valid: bytes) -> Path:
    """Put a bad file called ``name`` into the cache in the way ``how`` says."""
    cache.cards_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = cache.cards_dir / name
    text = valid.decode()
    data = {
        "truncated-half": valid[: len(valid) // 2],
        "truncated-1": valid[:1],
        "empty": b"",
        "flipped": bytes(b ^ 0x5A if i % 97 == 13 else b for i, b in enumerate(valid)),
        "binary": os.urandom(512),
        "not-utf8": b"\xff\xfe" + valid,
        "json-list": b"[]",
        "json-number": b"42",
        "json-null": b"null",
        "json-string": b'"card"',
        "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
        "huge-date": text.replace(
            '"not_after": ', '"not_after": 1' + "0" * 30 + ', "z": '
        ).encode(),
        "infinite-number": text.replace('"last_seen": ', '"last_seen": 1e400, "x": ').encode(),
        "wrong-types": text.replace('"pin_tries": {', '"pin_tries": {"x": "three", ').encode(),
        "certificate-as-number": text.replace('"auth": {', '"auth": 7, "y": {').encode(),
        "bad-base64": text.replace('"der": "', '"der": "!!').encode(),
        "fingerprint-mismatch": text.replace('"fingerprint": "', '"fingerprint": "00').encode(),
        "other-version": text.replace('"version": 1', '"version": 99').encode(),
        "too-large": b" " * (300 * 1024) + valid,
    }.get(how)
    if data is not None:
        path.write_bytes(data)
        path.chmod(0o600)
    elif how in ("world-readable", "group-writable", "foreign-owned"):
        path.write_bytes(valid)
        path.chmod({"world-readable": 0o644, "group-writable": 0o620}.get(how, 0o600))
        if how == "foreign-owned":
            os.chown(path, 4242, 4242)
    elif how == "symlink":
        elsewhere = cache.root / "elsewhere.json"
        elsewhere.write_bytes(valid)
        elsewhere.chmod(0o600)
        path.symlink_to(elsewhere)
    elif how == "fifo":
        os.mkfifo(path, 0o600)
    elif how == "directory":
        path.mkdir(mode=0o700)
    else:
        raise ValueError(how)
    return path


HOW = [
    "truncated-half", "truncated-1", "empty", "flipped", "binary", "not-utf8", "json-list",
    "json-number", "json-null", "json-string", "deep-nesting", "huge-date", "infinite-number",
    "wrong-types", "certificate-as-number", "bad-base64", "fingerprint-mismatch",
    "other-version", "too-large", "world-readable", "group-writable", "foreign-owned", "symlink",
    "fifo", "directory",
]  # fmt: skip


@pytest.mark.parametrize("how", HOW)
def test_bad_cache_file_is_quarantined_and_rebuilt(tmp_path, card_pki, how):
    if how == "foreign-owned" and os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    cache = CardCache(tmp_path / "mncd")
    good = record_for(card_pki)
    cache.save(good)
    name = f"{good.card_id}.json"
    valid = (cache.cards_dir / name).read_bytes()
    (cache.cards_dir / name).unlink()
    plant(cache, name, how, valid)
    assert cache.load(good.card_id) is None  # not trusted, no exception
    assert not os.path.lexists(cache.cards_dir / name)  # moved aside...
    assert quarantined(cache.cards_dir, name)  # ...where it can be looked at
    assert cache.all() == []
    cache.save(good)  # the next read of the card rebuilds it
    assert cache.load(good.card_id) == good
    faultstats.fault()


def test_a_summary_changed_on_disk_is_noticed_without_parsing(tmp_path, card_pki):
    """The summary kept with a public certificate is bound to it by a checksum: a later date
    written over it is caught, although the DER and its fingerprint still agree."""
    cache = CardCache(tmp_path / "mncd")
    good = record_for(card_pki)
    cache.save(good)
    path = cache.path_for(good.card_id)
    data = json.loads(path.read_text())
    data["certificates"]["auth"]["not_after"] += 365 * 86400
    path.write_text(json.dumps(data))
    assert cache.load(good.card_id) is None
    assert quarantined(cache.cards_dir, path.name)


def test_a_record_from_before_the_checksum_is_read_from_its_der(tmp_path, card_pki):
    cache = CardCache(tmp_path / "mncd")
    good = record_for(card_pki)
    cache.save(good)
    path = cache.path_for(good.card_id)
    data = json.loads(path.read_text())
    for entry in data["certificates"].values():
        entry.pop("summary_sha256", None)
    data["certificates"]["auth"]["serial"] = "ff"  # the DER is the truth for such a record
    path.write_text(json.dumps(data))
    assert cache.load(good.card_id) == good


def test_loading_the_cache_parses_no_certificate(tmp_path, card_pki):
    """The daemon reads its cache before cryptography is imported (see test_startup)."""
    cache = CardCache(tmp_path / "mncd")
    cache.save(record_for(card_pki))
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mncd.core.cache import CardCache\n"
        f"records = CardCache(Path({str(cache.root)!r})).all()\n"
        "print(len(records), records[0].auth.der is not None, 'cryptography' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert done.stdout.split() == ["1", "True", "False"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
FIELDS = ["version", "card_id", "token", "last_seen", "sign_present", "pin_tries",
          "sign_invalidated", "certificates"]  # fmt: skip


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    replace=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
    whole=st.none() | json_values,
    cert_field=st.sampled_from(["serial", "fingerprint", "issuer", "not_before", "der", "x"]),
    cert_value=json_values,
)
def test_arbitrary_json_is_never_trusted_blindly(
    tmp_path, card_pki, replace, whole, cert_field, cert_value
):
    """Any JSON where a record should be: a record that passed every check, or None."""
    cache = CardCache(tmp_path / f"h{time.monotonic_ns()}")
    good = record_for(card_pki)
    cache.save(good)
    path = cache.cards_dir / f"{good.card_id}.json"
    data = json.loads(path.read_text())
    data.update(replace)
    if isinstance(data.get("certificates"), dict) and "auth" in data["certificates"]:
        data["certificates"]["auth"][cert_field] = cert_value
    path.write_text(json.dumps(data if whole is None else whole))
    loaded = cache.load(good.card_id)
    assert loaded is None or loaded.card_id == good.card_id
    if loaded is not None and loaded.auth is not None and loaded.auth.der is not None:
        assert certificates.summarize(loaded.auth.der) == loaded.auth.summary
    faultstats.add("fuzz_in_process")


WRITER = """
import sys
from pathlib import Path
from mncd.core.state import atomic_write
path = Path(sys.argv[1])
versions = [Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()]
atomic_write(path, versions[0])
print("ready", flush=True)
i = 0
while True:
    i += 1
    atomic_write(path, versions[i % 2])
"""


def test_sigkill_during_writes_leaves_old_or_new(tmp_path, card_pki):
    """A child process writes two versions in turn and is SIGKILLed at random moments."""
    cache = CardCache(tmp_path / "mncd")
    small, large = record_for(card_pki, tries=3), record_for(card_pki, tries=1)
    large.sign_invalidated = {"fingerprint": "ab" * 32, "reason": "x" * 60_000, "fields": []}
    versions = []
    for i, record in enumerate((small, large)):
        cache.save(record)
        source = tmp_path / f"v{i}"
        source.write_bytes((cache.cards_dir / f"{record.card_id}.json").read_bytes())
        versions.append(source.read_bytes())
    assert len(versions[0]) < 10_000 < len(versions[1])
    path = cache.cards_dir / f"{small.card_id}.json"
    rng = random.Random(6)
    seen = set()
    for _ in range(25):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(tmp_path / "v0"), str(tmp_path / "v1")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.05))  # a random moment of the write loop
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        on_disk = path.read_bytes()
        assert on_disk in versions, "a torn write"
        seen.add(versions.index(on_disk))
        loaded = cache.load(small.card_id)
        assert loaded is not None and loaded.pin_tries["auth"] in (3, 1)
        faultstats.fault()
    assert seen == {0, 1}  # both versions were caught on disk at some kill
    # Temporaries a kill left behind are never read, and are cleaned up once stale.
    leftovers = [p for p in cache.cards_dir.iterdir() if p.name.startswith(".")]
    old = time.time() - 3600
    for leftover in leftovers:
        os.utime(leftover, (old, old))
    cache.save(small)
    assert not [p for p in cache.cards_dir.iterdir() if p.name.startswith(".")]


def test_daemon_starts_over_a_hostile_cache(sandbox, insert_card, tmp_path, card_pki):
    """The daemon with a cache full of traps, one of them under the inserted card's own name:
    it starts (a FIFO must not hang it), serves, moves the traps aside and writes a good file
    for the card."""
    card = insert_card(**SECRET_CARD)
    card_id = card_id_for(card.certificates()["auth"])
    state = tmp_path / "state"
    cache = CardCache(state / "mncd")
    good = record_for(card_pki)
    cache.save(good)
    valid = (cache.cards_dir / f"{good.card_id}.json").read_bytes()
    (cache.cards_dir / f"{good.card_id}.json").unlink()
    traps = {
        "fifo": "a" * 32,
        "deep-nesting": "b" * 32,
        "json-list": "c" * 32,
        "huge-date": "d" * 32,
        "world-readable": "e" * 32,
        "truncated-half": card_id,
    }
    for how, name in traps.items():
        plant(cache, f"{name}.json", how, valid)
    stack = Stack(tmp_path / "bus", sandbox.env, state).start()
    try:
        stack.wait_state("card-present")
        path = cache.cards_dir / f"{card_id}.json"
        wait_for(lambda: path.exists() and cache.load(card_id) is not None, "the rebuilt file")
        assert check_cache(cache.cards_dir) == [path.name]
        for name in traps.values():
            assert quarantined(cache.cards_dir, f"{name}.json")
    finally:
        stack.close()
    assert "Traceback" not in stack.daemon.log
    faultstats.fault()
