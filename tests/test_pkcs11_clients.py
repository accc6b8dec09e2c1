"""Desktop PKCS#11 clients through the daemon: GnuTLS (gnutls-cli, TLS 1.2 client
authentication against OpenSSL's s_server), NSS (modutil, certutil, tstclnt) and OpenSSH
(ssh-keygen -D, ssh-agent with ssh-add -s, ssh-keygen -Y sign / -Y verify). They load Debian's
p11-kit-client.so; the daemon asks for the PIN in its own dialog (a scripted pinentry)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from busstack import wait_for
from faultkit import verifies_with_pin
from pkcs11stack import AUTH_TOKEN, p11_kit_module, pkcs11_daemon, wait_for_token

AUTH_URL = "pkcs11:token=JPKI%20%28User%20Authentication%20PIN%29;id=%01"
NICKNAME = f"{AUTH_TOKEN}:User Authentication Certificate"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(*args: str, env: dict[str, str], stdin: str = "", timeout: int = 120):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip


class TlsServer:
    """``openssl s_server`` demanding a client certificate from the card's CA, TLS 1.2 only."""

    def __init__(self, directory: Path, ca_der: bytes) -> None:
        (directory / "ca.der").write_bytes(ca_der)
        subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(directory / "ca.der"),
                        "-out", str(directory / "ca.pem")], check=True)  # fmt: skip
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-keyout", str(directory / "server.key"),
             "-out", str(directory / "server.crt")], check=True, capture_output=True,
        )  # fmt: skip
        self.certificate = directory / "server.crt"
        self.port = free_port()
        self.log = directory / "s_server.log"
        self.process = subprocess.Popen(
            ["openssl", "s_server", "-accept", str(self.port), "-cert", str(self.certificate),
             "-key", str(directory / "server.key"), "-CAfile", str(directory / "ca.pem"),
             "-Verify", "1", "-verify_return_error", "-tls1_2", "-naccept", "1"],
            # Standard input stays open: s_server ends at its end of file.
            stdin=subprocess.PIPE, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: "ACCEPT" in self.log.read_text(), "s_server")

    def output(self) -> str:
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.log.read_text()

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def tls_server(tmp_path, card):
    server = TlsServer(tmp_path, card.certificates()["auth-ca"])
    yield server
    server.stop()


def test_gnutls_cli_authenticates_with_the_card_over_tls12(tmp_path, sandbox, card, tls_server):
    with pkcs11_daemon(tmp_path / "d", sandbox.env, [card.profile.auth_pin]) as served:
        wait_for_token(served)
        card.commands(clear=True)
        client = run(
            "gnutls-cli", "--provider", p11_kit_module(), "--x509certfile", f"{AUTH_URL};type=cert",
            "--x509keyfile", f"{AUTH_URL};type=private", "--x509cafile",
            str(tls_server.certificate), "--priority", "NORMAL:-VERS-TLS1.3", "-p",
            str(tls_server.port), "localhost", env=served.env(), stdin="hello from the card\n",
        )  # fmt: skip
        assert "Handshake was completed" in client.stdout, client.stdout + client.stderr
        server = tls_server.output()
        assert "verify return:1" in server and "hello from the card" in server, server
        # The client certificate the server accepted is the card's.
        assert "O = JPKI" in server and "verify error" not in server
        assert verifies_with_pin(card.commands()) >= 1
        (description,) = served.pinentry.descriptions()
        assert "/usr/bin/gnutls-cli" in description


def test_nss_lists_the_card_and_authenticates_with_tstclnt(tmp_path, sandbox, card, tls_server):
    with pkcs11_daemon(tmp_path / "d", sandbox.env, [card.profile.auth_pin] * 3) as served:
        wait_for_token(served)
        env = served.env()
        db = tmp_path / "nssdb"
        db.mkdir()
        dbdir = f"sql:{db}"
        assert run("certutil", "-N", "-d", dbdir, "--empty-password", env=env).returncode == 0
        added = run("modutil", "-dbdir", dbdir, "-add", "mncd", "-libfile", p11_kit_module(),
                    "-force", env=env)  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr
        # NSS reads the password from a file when it has no terminal; the token's protected
        # authentication path makes it leave the PIN to the daemon's dialog (one per process:
        # NSS logs in to list the certificates of a token that needs a login).
        (tmp_path / "pw").write_text("\n")
        listed = run("certutil", "-L", "-d", dbdir, "-h", AUTH_TOKEN, "-f", str(tmp_path / "pw"),
                     env=env)  # fmt: skip
        assert NICKNAME in listed.stdout, listed.stdout + listed.stderr
        keys = run("certutil", "-K", "-d", dbdir, "-h", AUTH_TOKEN, "-f", str(tmp_path / "pw"),
                   env=env)  # fmt: skip
        assert "User Authentication Key" in keys.stdout, keys.stdout + keys.stderr
        client = subprocess.Popen(
            ["tstclnt", "-h", "localhost", "-p", str(tls_server.port), "-d", dbdir, "-n",
             NICKNAME, "-V", "tls1.2:tls1.2", "-o", "-W", str(tmp_path / "pw")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            assert client.stdin is not None
            client.stdin.write(b"hello from NSS\n")
            client.stdin.flush()
            wait_for(lambda: "hello from NSS" in tls_server.log.read_text(), "the message", 60)
        finally:
            client.kill()  # tstclnt waits for the server after it has sent its message
            client.communicate()
        server = tls_server.output()
        assert "verify return:1" in server and "O = JPKI" in server, server
        assert any("tstclnt" in text for text in served.pinentry.descriptions())


def test_ssh_lists_the_key_and_signs_through_the_agent(tmp_path, sandbox, card):
    with pkcs11_daemon(tmp_path / "d", sandbox.env) as served:
        wait_for_token(served)
        env = served.env()
        listed = run("ssh-keygen", "-D", p11_kit_module(), env=env)
        assert listed.returncode == 0, listed.stderr
        (key,) = [line for line in listed.stdout.splitlines() if "User Authentication Key" in line]
        agent_socket = tmp_path / "agent.sock"
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_socket)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for(agent_socket.exists, "ssh-agent")
            env = {**env, "SSH_AUTH_SOCK": str(agent_socket)}
            env.pop("DISPLAY", None)
            # ssh-add reads the PIN from standard input when it has no terminal.
            added = subprocess.run(
                ["setsid", "-w", "ssh-add", "-s", p11_kit_module()], input=card.profile.auth_pin
                + "\n", capture_output=True, text=True, env=env, timeout=60,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            (tmp_path / "key.pub").write_text(key + "\n")
            message = tmp_path / "message"
            message.write_text("signed with a My Number Card through ssh-agent\n")
            signed = run("ssh-keygen", "-Y", "sign", "-f", str(tmp_path / "key.pub"), "-n",
                         "file", str(message), env=env)  # fmt: skip
            assert signed.returncode == 0, signed.stderr
            keytype, blob = key.split()[:2]
            (tmp_path / "allowed").write_text(f"holder {keytype} {blob}\n")
            verified = subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "holder",
                 "-n", "file", "-s", f"{message}.sig"], stdin=message.open(),
                capture_output=True, text=True, env=env, timeout=60,
            )  # fmt: skip
            assert verified.returncode == 0 and "Good" in verified.stdout + verified.stderr
        finally:
            agent.terminate()
            agent.wait()
    assert card.tries()["auth"] == 3
