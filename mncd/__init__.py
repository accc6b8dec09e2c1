"""mncd: a desktop daemon for the Japanese My Number Card (マイナンバーカード)."""

__version__ = "0.1.0"
