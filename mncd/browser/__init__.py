"""The browser bridge: a native-messaging host and a browser extension for government sites
(マイナポータル, e-Tax) that need the card, a client of the daemon through :mod:`mncd.client`."""
