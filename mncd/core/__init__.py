"""The daemon's domain: the card thread, the live model of readers and cards, card identity,
the one PIN gate and the use cases, and the events every front door hears. Imports the card
layer and JPKI, never a front door (D-Bus, PKCS#11, the desktop)."""
