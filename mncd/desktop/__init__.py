"""Talking to the person: notices, desktop notifications and the daemon's own PIN dialogs."""
