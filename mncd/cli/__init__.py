"""``mncctl``: the command-line client of the mncd daemon."""
