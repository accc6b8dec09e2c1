"""The virtual My Number Card: a faithful simulator reached through real pcscd + vpcd."""
