"""A daemon without a display (a user manager that did not import DISPLAY/WAYLAND_DISPLAY): an
application gets an error at once instead of waiting for a dialog nobody sees, nothing reaches
the card, and the log and ``mncctl doctor`` name the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pkcs11stack import AUTH_SLOT, p11_kit_module, pkcs11_daemon, wait_for_token

FIX = "systemctl --user import-environment DISPLAY WAYLAND_DISPLAY"
MNCCTL = str(Path(sys.executable).with_name("mncctl"))


def test_no_display_is_an_error_for_the_application_and_doctor_names_the_fix(
    tmp_path, sandbox, card
):
    data = tmp_path / "challenge"
    data.write_bytes(b"a TLS 1.2 handshake's digest, say")
    with pkcs11_daemon(tmp_path / "d", sandbox.env, display="") as served:
        wait_for_token(served, AUTH_SLOT)
        card.commands(clear=True)
        # Through the log-in door, as a browser: the key is used without C_Login, and the
        # daemon would ask for the PIN at the signature.
        login = served.runtime / "mncd" / "pkcs11-login"
        signed = subprocess.run(
            ["pkcs11-tool", "--module", p11_kit_module(), "--sign",
             "--id", "01", "-m", "SHA256-RSA-PKCS", "-i", str(data), "-o",
             str(tmp_path / "sig")],
            capture_output=True, text=True, timeout=60,
            env={**served.env(), "P11_KIT_SERVER_ADDRESS": f"unix:path={login}"},
        )  # fmt: skip
        assert signed.returncode != 0
        assert "CKR_FUNCTION_FAILED" in signed.stderr, signed.stdout + signed.stderr
        assert not [c for c in card.commands() if c.startswith(("0020008004", "802A"))]
        assert "failed: mncd has no DISPLAY or WAYLAND_DISPLAY in its environment" in (
            served.daemon.log
        )
        assert FIX in served.daemon.log

        env = {**served.env(), "XDG_RUNTIME_DIR": str(served.runtime), "LANG": "C.UTF-8"}
        doctor = subprocess.run([MNCCTL, "doctor"], capture_output=True, text=True, timeout=120,
                                env=env)  # fmt: skip
        assert doctor.returncode == 1, doctor.stdout
        line = next(x for x in doctor.stdout.splitlines() if "dialog's display:" in x)
        assert line.startswith("FAIL") and FIX in line, line
        served_line = next(x for x in doctor.stdout.splitlines() if "PKCS#11 socket:" in x)
        assert served_line.startswith("ok") and str(login) in served_line
