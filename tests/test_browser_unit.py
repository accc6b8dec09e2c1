"""The pieces of the browser bridge that need no card: DigestInfos taken as they are, the
installation id and the combination code, the browser named by the kernel, request checks."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from mncd.browser.messages import RequestError, parse_request
from mncd.card.digestinfo import digest_info, parse_digest_info
from mncd.core.callers import parent_executable
from mncd.core.installation import combination_code, installation_id


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384", "sha512"])
def test_a_digest_info_is_taken_exactly_as_written(hash_name):
    digest = hashlib.new(hash_name, b"x").digest()
    assert parse_digest_info(digest_info(hash_name, digest)) == (hash_name, digest)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", digest_info("sha256", bytes(32))[:-1], digest_info("sha256", bytes(32)) + b"\0",
     bytes(51), b"\x30\x31\x30\x0b" + bytes(47)],
)  # fmt: skip
def test_anything_else_is_refused(data):
    with pytest.raises(ValueError):
        parse_digest_info(data)


def test_the_installation_id_is_made_once_private_and_replaced_when_damaged(tmp_path):
    root = tmp_path / "state"
    first = installation_id(root)
    assert len(first) == 32 and int(first, 16) >= 0
    assert stat.S_IMODE((root / "installation-id").stat().st_mode) == 0o600
    assert installation_id(root) == first
    (root / "installation-id").write_text("not hex at all\n")
    replaced = installation_id(root)
    assert replaced != first and len(replaced) == 32
    assert [p.name for p in root.iterdir() if p.name.startswith("installation-id.corrupt")]


def test_the_combination_code_follows_the_facts():
    uuid = "00112233445566778899aabbccddeeff"
    expected = hashlib.sha256(
        bytes.fromhex("2e71f6620bc654ced494e5ec34fe03c8") + b"AB12345678901" + bytes.fromhex(uuid)
    ).hexdigest()
    assert combination_code("AB12345678901", uuid) == expected


def test_the_browser_is_the_parent_the_kernel_names():
    child = subprocess.run(
        [sys.executable, "-c", "from mncd.core.callers import parent_executable as p; "
         "import os; print(p(os.getpid()))"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert child.stdout.strip() == os.path.realpath(sys.executable)  # this test's process
    assert parent_executable(os.getpid()) == os.path.realpath(f"/proc/{os.getppid()}/exe")
    assert parent_executable(0) == "" and parent_executable(2**22 + 7) == ""


@pytest.mark.parametrize(
    "origin",
    ["https://www.myna.go.jp", "https://a.b.go.jp:8443", "https://myna.go.jp"],
)
def test_go_jp_origins_are_served(origin):
    assert parse_request({"mode": "05", "origin": origin}).origin == origin


@pytest.mark.parametrize(
    "origin",
    ["https://go.jp.example.com", "https://evil-go.jp", "http://www.myna.go.jp",
     "https://www.myna.go.jp/", "https://WWW.MYNA.GO.JP", "https://x.go.jp\n", "", None, 5],
)  # fmt: skip
def test_other_origins_are_refused(origin):
    with pytest.raises(RequestError):
        parse_request({"mode": "05", "origin": origin})
