"""The long-running service's process wiring: main loop, monitors, udev, systemd, install."""
