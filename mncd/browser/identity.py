"""Who the bridge is: the host's name, the extension's ids (Chromium's from the key in its
manifest, Firefox's add-on id) and where the extension's files are."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from pathlib import Path

#: The native-messaging host's name (our own; the official client's host is ``jp.go.myna``).
HOST_NAME = "io.github.mncd.browser"
#: The extension's files, loaded unpacked by the browser.
EXTENSION_DIR = Path(__file__).with_name("extension")


@cache
def extension_manifest() -> dict:
    """The extension's manifest.json."""
    return json.loads((EXTENSION_DIR / "manifest.json").read_text(encoding="utf-8"))


def chromium_extension_id() -> str:
    """The Chromium extension id fixed by the manifest's ``key``: the first 128 bits of the
    SHA-256 of the public key, each hex digit written as a letter a–p."""
    key = base64.b64decode(extension_manifest()["key"])
    digest = hashlib.sha256(key).hexdigest()[:32]
    return "".join(chr(ord("a") + int(digit, 16)) for digit in digest)


def chromium_origin() -> str:
    """The origin Chromium passes to the host as its first argument."""
    return f"chrome-extension://{chromium_extension_id()}/"


def firefox_addon_id() -> str:
    """The add-on id Firefox passes to the host as its second argument."""
    return extension_manifest()["browser_specific_settings"]["gecko"]["id"]


def version() -> str:
    """The bridge's version (the extension's)."""
    return extension_manifest()["version"]
