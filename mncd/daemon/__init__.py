"""The long-running service: live state, the card thread, cache, monitors, systemd."""
