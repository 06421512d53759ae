"""A real OpenSSH server on 127.0.0.1 for the device tests: a free port, a host key and a client key made here, an
ssh_config naming it `device` with its known host key, and TMPDIR of its sessions set to a folder the test sees."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class LoopbackSshd:
    folder: Path
    port: int
    user: str
    key: Path
    known_hosts: Path
    remote_tmp: Path  # TMPDIR of every session: where the bench's temporary folders appear
    proc: subprocess.Popen

    def client_config(self, name: str = "config", *, key: Path | None = None, known_hosts: Path | None = None,
                      port: int | None = None) -> Path:
        path = self.folder / name
        path.write_text(f"Host device\n  HostName 127.0.0.1\n  Port {port or self.port}\n  User {self.user}\n"
                        f"  IdentityFile {key or self.key}\n  IdentitiesOnly yes\n"
                        f"  UserKnownHostsFile {known_hosts or self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                        "  StrictHostKeyChecking yes\n  LogLevel ERROR\n")
        return path

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listening one)."""
        out = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            except OSError:
                continue
            if fields.get("PPid", "").strip() == str(self.proc.pid) and fields.get("Name", "").startswith("sshd"):
                out.append(int(status.parent.name))
        return out

    def drop_connections(self) -> None:
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=60)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path) -> LoopbackSshd | str:
    """The server, or why it cannot run here (one line)."""
    if not Path(SSHD).is_file() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "OpenSSH's sshd and ssh are not installed (Debian: apt-get install openssh-server openssh-client)"
    host_key, user_key = keygen(folder / "host_key"), keygen(folder / "id_ed25519")
    authorized = folder / "authorized_keys"
    authorized.write_text(Path(f"{user_key}.pub").read_text())
    authorized.chmod(0o600)
    remote_tmp = folder / "remote-tmp"
    remote_tmp.mkdir()
    port, user = free_port(), pwd.getpwuid(os.getuid()).pw_name
    config = folder / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
                      "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                      f"StrictModes no\nUsePAM no\nPidFile {folder / 'sshd.pid'}\nSetEnv TMPDIR={remote_tmp}\n"
                      f"AllowUsers {user}\nPermitRootLogin prohibit-password\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    log = open(folder / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = (folder / "sshd.log").read_text().strip().splitlines()
            return f"sshd did not start: {text[-1] if text else f'exit {proc.returncode}'}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        return "sshd did not listen within 15 s"
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text().split(' ', 2)[0]} "
                     f"{Path(f'{host_key}.pub').read_text().split(' ', 2)[1]}\n")
    return LoopbackSshd(folder, port, user, user_key, known, remote_tmp, proc)
