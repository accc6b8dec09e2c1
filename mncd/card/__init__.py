"""Card protocol layer: synchronous, transport-agnostic, no I/O framework inside."""
