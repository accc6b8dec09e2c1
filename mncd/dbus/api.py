"""Names of the D-Bus API, shared by the daemon and its clients (kept in one place)."""

BUS_NAME = "io.github.mncd.MyNumberCard1"
OBJECT_PATH = "/io/github/mncd/MyNumberCard1"
INTERFACE = "io.github.mncd.MyNumberCard1"
ERROR_PREFIX = INTERFACE + ".Error."
#: Largest ``data`` accepted by Sign/Authenticate; hash bigger input and pass digest=true.
MAX_DATA = 1024 * 1024
