"""The D-Bus front door: the exported interface, its option parsing, dbus-next workarounds."""
