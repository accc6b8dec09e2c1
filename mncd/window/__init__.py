"""The desktop window (``mncd-window``): the card, its certificates and PINs, live; changing a
PIN, showing and exporting a certificate, checking personal data, the doctor's checks, signing
and verifying PDFs. GTK 4 + libadwaita through Debian's PyGObject (python3-gi); a client of the
daemon through :mod:`mncd.client` only. Nothing here is imported by the daemon."""
