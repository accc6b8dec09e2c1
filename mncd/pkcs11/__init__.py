"""The PKCS#11 front door: the server side of p11-kit's RPC protocol.

Applications load Debian's stock ``p11-kit-client.so`` (or ``p11-kit-proxy.so`` with a module
file); every PKCS#11 call reaches the daemon over a UNIX socket, and the card work goes through
the same manager and PIN gate as D-Bus calls. ``wire`` is the protocol, ``tokens`` the slots and
objects, ``mechanisms`` what the card signs, ``module`` the PKCS#11 semantics for one
application, ``server`` the socket.
"""
