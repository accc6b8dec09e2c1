"""The READMEs' commands (README.md and README.ja.md) and the examples of docs/, run as written
against the daemon and the virtual card.

Covered elsewhere: the documents example of docs/signed-documents.md (``tests/test_documents.py``),
the PKCS#11 commands of docs/pkcs11.md (``tests/test_pkcs11_user.py``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from busstack import daemon_on_private_bus
from pdfkit import make_pdf
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import wait_state

from mncd.config import Config
from mncd.vcard.profile import CardProfile
from mncd.vcard.sandbox import PcscSandbox

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
READMES = {"en": README, "ja": ROOT / "README.ja.md"}
DOCS = ROOT / "docs"


def python_example() -> str:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    start = text.index("From Python, `mncd.client`")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None
    return match.group(1)


def run_example(address: str, tmp_path: Path) -> subprocess.CompletedProcess:
    example = tmp_path / "example.py"
    example.write_text(python_example())
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}
    return subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, env=env
    )


def test_python_api_example_signs_with_the_pin_from_the_daemons_dialog(tmp_path, sandbox, card):
    pinentry = ScriptedPinentry(tmp_path / "pinentry", [card.profile.sign_password])
    env = {**sandbox.env, **config_with(tmp_path, pinentry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        result = run_example(daemon.bus.address, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"card-present valid {card.profile.not_after_days}"
    assert lines[1] == "256 bytes, verified by the daemon"
    assert any("sign a document" in text for text in pinentry.descriptions())
    assert card.profile.sign_password not in result.stdout + result.stderr


def test_python_api_example_reports_a_wrong_pin(tmp_path, sandbox, insert_card):
    card = insert_card()
    pinentry = ScriptedPinentry(tmp_path / "pinentry", ["ZZZ999", "cancel"])
    env = {**sandbox.env, **config_with(tmp_path, pinentry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        result = run_example(daemon.bus.address, tmp_path)
    assert result.returncode == 0, result.stderr
    # The dialog asked again after the wrong password; the user cancelled there.
    assert result.stdout.splitlines()[1] == "the user cancelled (操作はキャンセルされました)"
    assert card.profile.sign_tries_left - 1 == card.tries()["sign"]


def shell_blocks_after(heading: str, doc: Path = DOCS / "development.md") -> list[str]:
    text = doc.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start)
    section = text[start : end if end >= 0 else None]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_run_the_daemon_by_hand_as_the_readme_says(tmp_path):
    """Both terminals of "Run the daemon by hand on the sandbox", line by line."""
    first, second = shell_blocks_after("## Run the daemon by hand on the sandbox")
    (sandbox_command,) = [line for line in first.splitlines() if line and line[0] != "#"]
    repo = ROOT
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "LANG": "C.UTF-8",
           "LANGUAGE": ""}  # fmt: skip
    for name in ("PCSCLITE_CSOCK_NAME", "MNCD_VCARD_CONTROL", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(name, None)
    terminal1 = subprocess.Popen(
        ["bash", "-c", f"exec {sandbox_command}"], cwd=repo, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        exports = []
        for line in terminal1.stdout:  # type: ignore[union-attr]
            if line.startswith("export "):
                exports.append(line.strip())
            if line.startswith("Ctrl-C stops it."):
                break
        assert len(exports) == 2, exports
        # Terminal 2: the pasted exports, then everything after dbus-run-session in its shell.
        lines = second.splitlines()
        start = lines.index("dbus-run-session -- bash")
        assert lines[start - 1].startswith("export PCSCLITE_CSOCK_NAME=…")
        script = tmp_path / "terminal2.sh"
        script.write_text("set -e\n" + "\n".join(lines[start + 1 :]) + "\n", encoding="utf-8")
        result = subprocess.run(
            ["bash", "-c", "; ".join(exports) + f"; dbus-run-session -- bash {script}"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        terminal1.send_signal(signal.SIGINT)
        terminal1.wait(timeout=30)
    out = result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.count("State:            My Number Card present") == 2
    assert "verified" in out
    assert "'matches': <false>" in out and "'changed': <['address']>" in out
    assert "'state': <'invalidated'>" in out
    final = out[out.rindex("Signing certificate") :]
    assert "  State:          invalidated (revoked)" in final
    assert "Get a new one issued at your municipal office" in final and "Expires:" not in final


def code_blocks_after(heading: str, language: str, doc: Path = README) -> list[str]:
    """The ``language`` code blocks of the section of ``doc`` that starts at ``heading``."""
    text = doc.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else None]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def commands(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def test_settings_example_is_read_as_written(tmp_path):
    (example,) = code_blocks_after("**Notices.**", "toml", DOCS / "mncctl.md")
    path = tmp_path / "config.toml"
    path.write_text(example, encoding="utf-8")
    config = Config.load(path)
    assert config.problems == []
    assert config.notify["expiry"] and config.thresholds == (30, 7, 1)
    assert config.pinentry == "pinentry"


def test_dbus_examples_with_busctl_and_gdbus(tmp_path, sandbox, card):
    """The busctl/gdbus block, each command as written, on a private session bus."""
    (block,) = code_blocks_after("# For application developers", "sh", DOCS / "api.md")
    lines = commands(block)
    assert [line.split()[0] for line in lines] == ["busctl", "gdbus", "gdbus"]
    with daemon_on_private_bus(tmp_path, {**sandbox.env, "LANG": "C.UTF-8"}) as daemon:
        wait_state(daemon.bus.address, "card-present")
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address}
        out = [
            subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60,
                           env=env)
            for line in lines
        ]  # fmt: skip
    for done in out:
        assert done.returncode == 0, done.stderr
    assert '"card-present"' in out[0].stdout and '"auth"' in out[0].stdout
    assert out[1].stdout.startswith("([byte 0x") or out[1].stdout.startswith("(@ay [")
    assert out[2].stdout.startswith("([byte 0x30, 0x82")  # a DER certificate
    assert card.tries()["auth"] == card.profile.auth_tries_left


def test_vcard_commands_drive_a_running_sandbox(tmp_path):
    """The mncd-vcard block after "these commands drive the running sandbox", in order, on a
    sandbox of this test's own (it stops pcscd); each must succeed."""
    (sandbox_block, driving) = code_blocks_after(
        "## The virtual card", "sh", DOCS / "development.md"
    )[:2]
    assert "mncd-vcard sandbox" in sandbox_block
    lines = commands(driving)
    box = PcscSandbox(readers=True).start()
    try:
        control = box.control
        control.insert(CardProfile())
        env = {**os.environ, **box.env, "MNCD_VCARD_CONTROL": str(box.control_path)}
        outputs = {}
        for line in lines:
            done = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 0, f"{line}: {done.stdout}{done.stderr}"
            outputs[line.split()[1]] = done.stdout
    finally:
        box.stop()
    assert set(outputs) >= {"remove", "insert", "pull", "pcscd", "tries", "renew-sign"}
    assert "auth" in outputs["tries"]


EVERYDAY = {"en": "## Everyday commands", "ja": "## 毎日の使い方"}
LOCALES = {"en": "C.UTF-8", "ja": "ja_JP.UTF-8"}
JAPANESE = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")


@pytest.mark.parametrize("language", ["en", "ja"])
def test_desktop_commands_on_the_virtual_card(tmp_path, sandbox, insert_card, language):
    """ "Everyday commands" of each README, each mncctl line as written, on the virtual card with
    the daemon's dialog answered by a scripted pinentry (a real desktop and reader are not here).

    Not run here as written: ``mncctl watch`` (runs until Ctrl-C; ``tests/test_mncctl.py``) and
    ``mncctl pin change auth`` (``tests/test_mncctl_pin_change.py``). ``verify`` exits 8: the
    virtual card's CA is not one of J-LIS's.
    """
    card = insert_card()
    (block,) = code_blocks_after(EVERYDAY[language], "sh", READMES[language])
    assert commands(block) == commands(code_blocks_after(EVERYDAY["en"], "sh", README)[0])
    lines = {}
    for line in commands(block):
        words = line.split()
        if words[0].endswith("/mncctl"):
            lines[" ".join(words[1:3] if words[1] in ("pin", "cert") else words[1:2])] = line
    profile = card.profile
    pinentry = ScriptedPinentry(
        tmp_path / "pinentry",
        [profile.sign_password, profile.auth_pin, profile.card_info_pin, profile.sign_password],
    )
    env = {**sandbox.env, **config_with(tmp_path, pinentry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    work = tmp_path / "work"
    work.mkdir()
    make_pdf(work / "application.pdf")
    repo = ROOT
    runs = {}
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        client_env = {**os.environ, **env, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address,
                      "LANGUAGE": "", "LANG": LOCALES[language]}  # fmt: skip
        for key in ("status", "sign", "verify", "auth", "pin status", "cert show",
                    "cert export", "check", "doctor"):  # fmt: skip
            command = lines[key].replace(".venv/bin/", f"{repo}/.venv/bin/")
            runs[key] = subprocess.run(["bash", "-c", command], cwd=work, env=client_env,
                                       capture_output=True, text=True, timeout=120)  # fmt: skip
    codes = {key: done.returncode for key, done in runs.items()}
    assert codes == {**dict.fromkeys(runs, 0), "verify": 8, "doctor": codes["doctor"]}, runs
    assert (work / "application-signed.pdf").stat().st_mode & 0o777 == 0o600
    assert (work / "auth.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    if language == "en":
        assert "State:            My Number Card present" in runs["status"].stdout
        assert "intact" in runs["verify"].stdout
        assert "verified" in runs["auth"].stdout
        assert "card: a My Number Card in " in runs["doctor"].stdout
    else:
        assert re.match(r"状態: +マイナンバーカードがあります\n", runs["status"].stdout)
        assert "マイナンバーカードを確認しました" in runs["doctor"].stdout
        for key in ("verify", "auth", "pin status", "cert show", "check"):
            assert JAPANESE.search(runs[key].stdout), (key, runs[key].stdout)
    assert profile.sign_password not in "".join(d.stdout + d.stderr for d in runs.values())


# -- the READMEs for people: the two commands, installing, the first status, the links ---------


def first_block(language: str) -> list[str]:
    text = READMES[language].read_text(encoding="utf-8")
    match = re.search(r"```sh\n(.*?)```", text, re.S)
    assert match is not None
    return commands(match.group(1))


def test_both_readmes_start_with_the_demo_and_the_tests():
    for language, readme in READMES.items():
        assert first_block(language) == ["./scripts/demo", "./scripts/test"], language
        text = readme.read_text(encoding="utf-8")
        assert text.index("```sh") < 1200, language  # at the top, after a short introduction


@pytest.mark.parametrize("language", ["en", "ja"])
def test_the_demo_runs_as_written_in_the_users_language(tmp_path, language):
    """./scripts/demo exactly as the README's first line says (it runs scripts/setup first)."""
    (demo, _tests) = first_block(language)
    env = {**os.environ, "LANG": LOCALES[language], "LANGUAGE": "", "TMPDIR": str(tmp_path)}
    for name in ("PCSCLITE_CSOCK_NAME", "MNCD_VCARD_CONTROL", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(name, None)
    done = subprocess.run(["bash", "-c", demo], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    if language == "en":
        assert (
            "== Authenticate: a 256-byte signature, verified against the user-authentication" in out
        )
        assert "== The card is out." in out and "State:" in out
    else:
        assert (
            "== 本人確認（Authenticate）: 256バイトの署名を利用者証明用電子証明書で検証しました。"
            in out
        )
        assert "== カードを取り出しました。" in out and "状態:" in out
        assert "verified" not in out and "State:" not in out


INSTALLING = {"en": "## Installing", "ja": "## インストール"}
FIRST_CHECK = {"en": "## The first check", "ja": "## 最初の確認"}


@pytest.mark.parametrize("language", ["en", "ja"])
def test_installing_as_written_needs_no_compiler_and_says_what_works(tmp_path, language):
    """The install block, line by line, for a user of the test's own (HOME) on a machine with no
    systemd user manager: setup (done already: it only checks), then the user service, in the
    README's language; then the uninstall command the README names."""
    (block,) = code_blocks_after(INSTALLING[language], "sh", READMES[language])
    lines = commands(block)
    assert lines == ["./scripts/setup", ".venv/bin/mncd --install-user-service"]
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DBUS_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_RUNTIME_DIR=str(runtime), LANG=LOCALES[language],
               LANGUAGE="", CC="/bin/false", CXX="/bin/false")  # fmt: skip
    runs = [subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600) for line in lines]  # fmt: skip
    for done in runs:
        assert done.returncode == 0, done.stdout + done.stderr
    said = runs[1].stdout
    assert (ROOT / ".venv/bin/mncd").as_posix() in said
    if language == "en":
        assert "No systemd user manager runs in this session. What works:" in said
    else:
        assert "このセッションではsystemdのユーザーマネージャーが動いていません。" in said
    unit = tmp_path / "home/.config/systemd/user/mncd.service"
    assert unit.exists()
    text = READMES[language].read_text(encoding="utf-8")
    uninstall = re.search(r"`(\.venv/bin/mncd --uninstall-user-service)`", text)
    assert uninstall is not None
    removed = subprocess.run(["bash", "-c", uninstall.group(1)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()


@pytest.mark.parametrize("language", ["en", "ja"])
def test_the_first_status_looks_as_the_readme_shows_it(tmp_path, sandbox, card, language):
    """`mncctl status` as written, on the virtual card: every label of the README's sample, in
    its order, and nothing the sample leaves to --details."""
    (command,) = commands(code_blocks_after(FIRST_CHECK[language], "sh", READMES[language])[0])
    (sample,) = code_blocks_after(FIRST_CHECK[language], "text", READMES[language])
    with daemon_on_private_bus(tmp_path, {**sandbox.env, "LANG": "C.UTF-8"}) as daemon:
        wait_state(daemon.bus.address, "card-present")
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address,
               "LANG": LOCALES[language], "LANGUAGE": ""}  # fmt: skip
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr

    def labels(text: str) -> list[str]:
        return [line.split(":")[0] for line in text.splitlines() if ":" in line.split("  ")[0]
                or re.match(r"^ *[^ :]+:", line)]  # fmt: skip

    shown = [label for label in labels(done.stdout) if not label.startswith("カードリーダー一覧")
             and not label.startswith("Readers")]  # (the sandbox has two readers)  # fmt: skip
    assert shown == labels(sample), done.stdout


def test_every_link_of_the_readmes_leads_to_a_file():
    for readme in READMES.values():
        text = readme.read_text(encoding="utf-8")
        targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
        assert len(targets) >= 8
        for target in targets:
            assert (ROOT / target).exists(), (readme.name, target)
