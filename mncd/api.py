"""Names of the D-Bus API, shared by the daemon and its clients (kept in one place)."""

BUS_NAME = "io.github.mncd.MyNumberCard1"
OBJECT_PATH = "/io/github/mncd/MyNumberCard1"
INTERFACE = "io.github.mncd.MyNumberCard1"
ERROR_PREFIX = INTERFACE + ".Error."
#: Largest ``data`` accepted by Sign/Authenticate; hash bigger input and pass digest=true.
MAX_DATA = 1024 * 1024
#: The interface a caller of Sign exports when it passes ``digest-from``: the daemon calls its
#: ``Digest(ay certificate, s hash) -> ay digest`` once, after the PIN, inside the transaction.
DIGEST_INTERFACE = "io.github.mncd.DigestSource1"
#: Longest the daemon waits for that digest (the card stays verified meanwhile).
DIGEST_TIMEOUT = 30.0
#: A card id, as GetStatus shows it: this many lower-case hex digits; ForgetCard also takes its
#: first CARD_ID_MIN_DIGITS or more.
CARD_ID_DIGITS = 32
CARD_ID_MIN_DIGITS = 8
#: Most DigestInfos one SignDigestInfo call signs (under one PIN).
MAX_SERVICE_DIGESTS = 16
#: Longest ``site`` option (an origin such as ``https://www.example.go.jp``).
MAX_SITE = 260
