"""How asking the user can fail: importable without the dialogs themselves."""

from __future__ import annotations


class PromptCancelledError(Exception):
    """The user cancelled the PIN dialog or declined the last try."""


class PromptUnavailableError(Exception):
    """No PIN dialog could be shown (pinentry missing or failing)."""
