"""Reads and drives an application through AT-SPI, as a screen reader would. Run with the
system Python (Debian's python3-pyatspi), with DISPLAY and DBUS_SESSION_BUS_ADDRESS set:

    /usr/bin/python3 atspi_reader.py dump APP            # JSON: every node of APP's tree
    /usr/bin/python3 atspi_reader.py click APP NAME      # press the button named NAME

A node is ``{"role", "name", "description", "text", "showing", "focused", "focusable",
"depth"}``;
``text`` is the Text interface's content (a label's text). Exit 3 when APP is not on the
desktop, 4 when no button is named NAME.
"""

from __future__ import annotations

import json
import sys

import pyatspi

BUTTONS = ("push button", "button", "toggle button")


def application(name: str):
    desktop = pyatspi.Registry.getDesktop(0)
    for index in range(desktop.childCount):
        app = desktop.getChildAtIndex(index)
        if app is not None and app.name == name:
            return app
    return None


def walk(node, depth=0, out=None):
    out = [] if out is None else out
    if node is None or depth > 60:
        return out
    try:
        text = node.queryText().getText(0, -1)
    except NotImplementedError:
        text = ""
    except Exception:
        text = ""
    states = node.getState()
    out.append(
        {
            "role": node.getRoleName(),
            "name": node.name or "",
            "description": node.description or "",
            "text": text,
            "showing": states.contains(pyatspi.STATE_SHOWING),
            "focused": states.contains(pyatspi.STATE_FOCUSED),
            "focusable": states.contains(pyatspi.STATE_FOCUSABLE),
            "depth": depth,
            "node": node,
        }
    )
    for index in range(node.childCount):
        walk(node.getChildAtIndex(index), depth + 1, out)
    return out


def main(argv: list[str]) -> int:
    command, app_name = argv[1], argv[2]
    app = application(app_name)
    if app is None:
        print(json.dumps([a.name for a in pyatspi.Registry.getDesktop(0)]), file=sys.stderr)
        return 3
    nodes = walk(app)
    if command == "dump":
        for node in nodes:
            del node["node"]
        print(json.dumps(nodes, ensure_ascii=False))
        return 0
    if command == "click":
        wanted = argv[3]
        buttons = [node for node in nodes if node["role"] in BUTTONS]
        # GTK 4.8 names a dialog's buttons "Save Save" (label and mnemonic label): that too.
        exact = [node for node in buttons if node["name"] == wanted]
        doubled = [node for node in buttons if node["name"] == f"{wanted} {wanted}"]
        for node in exact or doubled:
            action = node["node"].queryAction()
            names = [action.getName(index) for index in range(action.nActions)]
            pressing = [n for n in ("click", "press", "activate") if n in names]
            action.doAction(names.index(pressing[0]) if pressing else 0)
            return 0
        return 4
    print(f"unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
