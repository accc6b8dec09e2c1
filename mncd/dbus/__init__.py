"""The D-Bus front door: API names, the exported interface, its errors, dbus-next workarounds."""
