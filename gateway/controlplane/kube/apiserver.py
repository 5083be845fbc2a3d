"""A real Kubernetes API server on the laptop (`modelserve up --kube-local`).

etcd and kube-apiserver (1.20, built once by `make kube`: ../tools/kube-apiserver.sh) run as
child processes on 127.0.0.1, with their state under one folder (default `.kube/`):

- `pki/`: a CA of our own, the API server's serving certificate (127.0.0.1 and localhost) and
  the service-account signing key; made once, kept across restarts.
- `tokens.csv`: static bearer tokens (`--token-auth-file`): the admin (group
  `system:masters`), whose kubeconfig is written for the user, and the reconciler, a user with
  no group that RBAC allows only what `reconciler_role` grants. Made once, mode 0600.
- `etcd/`: the data. What the API server holds survives `up` restarts: a new `up` adopts it.
- `kubeconfig` (0600): the admin's, for kubectl. `reconciler.kubeconfig` (0600): the
  reconciler's.

Security: RBAC on, `--anonymous-auth=false`, `--insecure-port=0` (1.20 otherwise also serves
everything unauthenticated on 127.0.0.1:8080), loopback only. etcd has no authentication of
its own: it listens on 127.0.0.1 only (as a kubeadm control plane's does).

A kubelet keeps a static control plane running; here `KubeProcess` restarts etcd or the API
server when it exits, with back-off, so the reconciler reconnects and catches up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from gateway.controlplane.components import PortAllocator
from gateway.controlplane.supervisor import die_with_parent

__all__ = [
    "ADMIN_USER",
    "RECONCILER_USER",
    "KubeBinaries",
    "KubeLocal",
    "KubeNotInstalled",
    "find_binaries",
]

ADMIN_USER = "modelserve-admin"
RECONCILER_USER = "modelserve-reconciler"
DEFAULT_CACHE = Path.home() / ".cache" / "modelserve-kube" / "bin"
READY_TIMEOUT_S = 120.0
TAIL_LINES = 20
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


class KubeNotInstalled(FileNotFoundError):
    """kube-apiserver or etcd is missing: `make kube` builds them."""


@dataclass(frozen=True)
class KubeBinaries:
    apiserver: Path
    etcd: Path


def find_binaries(state_dir: Path) -> KubeBinaries:
    """kube-apiserver and etcd from `$MODELSERVE_KUBE_BIN`, `<state_dir>/bin`, `make kube`'s
    cache, then $PATH. Raises `KubeNotInstalled` naming what is missing."""
    folders = [Path(p) for p in [os.environ.get("MODELSERVE_KUBE_BIN", "")] if p]
    folders += [state_dir / "bin", DEFAULT_CACHE]

    def find(name: str) -> Path | None:
        for folder in folders:
            if (folder / name).is_file() and os.access(folder / name, os.X_OK):
                return folder / name
        found = shutil.which(name)
        return Path(found) if found else None

    apiserver, etcd = find("kube-apiserver"), find("etcd")
    if apiserver is None or etcd is None:
        missing = [n for n, p in (("kube-apiserver", apiserver), ("etcd", etcd)) if p is None]
        raise KubeNotInstalled(
            f"{' and '.join(missing)} not found (looked in {', '.join(map(str, folders))} "
            "and $PATH): `make kube` builds them (~5 minutes, once)"
        )
    return KubeBinaries(apiserver, etcd)


# --- credentials -----------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _make_pki(pki: Path) -> None:
    """A CA, the API server's serving certificate and the service-account key, once."""
    if (pki / "apiserver.crt").is_file() and (pki / "sa.key").is_file():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def pem(k: rsa.RSAPrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key, sa_key = key(), key(), key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelserve-local-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(pki / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    _write_private(pki / "apiserver.key", pem(server_key))
    _write_private(pki / "apiserver.crt", server.public_bytes(serialization.Encoding.PEM))
    _write_private(pki / "sa.key", pem(sa_key))


def _tokens(path: Path) -> dict[str, str]:
    """user -> token from `--token-auth-file`, made once (token,user,uid[,"groups"])."""
    if not path.is_file():
        rows = [
            f'{secrets.token_urlsafe(32)},{ADMIN_USER},{ADMIN_USER},"system:masters"',
            f"{secrets.token_urlsafe(32)},{RECONCILER_USER},{RECONCILER_USER}",
        ]
        _write_private(path, ("\n".join(rows) + "\n").encode())
    users = {}
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) >= 2:
            users[parts[1]] = parts[0]
    return users


def kubeconfig(server: str, ca_file: Path, user: str, token: str, namespace: str) -> str:
    """A kubeconfig for `user` on `server`, the CA embedded, the context's namespace set."""
    import base64

    ca = base64.b64encode(ca_file.read_bytes()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "modelserve-local",
                      "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "modelserve-local",
                      "context": {"cluster": "modelserve-local", "user": user,
                                  "namespace": namespace}}],
        "current-context": "modelserve-local",
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


# --- processes -------------------------------------------------------------------------------


class KubeProcess:
    """One control-plane process, restarted with back-off when it exits (as a kubelet keeps a
    static pod running). Its output goes to `log` (the API server's is verbose); its exits and
    restarts are said on `output`."""

    def __init__(self, name: str, argv: list[str], log: Path, output: TextIO,
                 on_restart: Callable[[], None] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.output = output
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_restart = on_restart

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._keep(), name=f"keep {self.name}")

    async def _spawn(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),  # `up` killed outright: no orphans
        )

    async def _keep(self) -> None:
        while True:
            assert self.process is not None and self.process.stdout is not None
            with self.log.open("a") as log:
                async for raw in self.process.stdout:
                    line = raw.decode(errors="replace")
                    self.tail.append(line.rstrip("\n"))
                    log.write(line)
                    log.flush()
            code = await self.process.wait()
            if self._stopping:
                return
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            with contextlib.suppress(OSError, ValueError):
                self.output.write(f"[{self.name}] exited ({code}): restarting in {delay:g} s\n")
                self.output.flush()
            await asyncio.sleep(delay)
            self.restarts += 1
            await self._spawn()
            if self._on_restart is not None:
                self._on_restart()

    async def stop(self, grace_s: float = 10.0) -> None:
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class KubeLocal:
    """etcd and kube-apiserver on loopback with their state in `state_dir`."""

    def __init__(self, state_dir: Path, *, namespace: str = "default",
                 output: TextIO | None = None, binaries: KubeBinaries | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self.namespace = namespace
        self.output = output if output is not None else sys.stdout
        self.binaries = binaries or find_binaries(self.state_dir)
        self.pki = self.state_dir / "pki"
        self.etcd: KubeProcess | None = None
        self.apiserver: KubeProcess | None = None
        self.port = 0
        self.url = ""
        self.tokens: dict[str, str] = {}

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def reconciler_kubeconfig_path(self) -> Path:
        return self.state_dir / "reconciler.kubeconfig"

    async def start(self) -> None:
        """Start both, wait until the API server's /readyz says ok, write the kubeconfigs."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        await asyncio.to_thread(_make_pki, self.pki)
        self.tokens = _tokens(self.state_dir / "tokens.csv")
        ports = PortAllocator()
        client_port, peer_port, port = ports(), ports(), ports()
        self.port, self.url = port, f"https://127.0.0.1:{port}"
        etcd_url = f"http://127.0.0.1:{client_port}"
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        self.etcd = KubeProcess("etcd", [
            str(self.binaries.etcd), "--name", "modelserve",
            "--data-dir", str(self.state_dir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"modelserve=http://127.0.0.1:{peer_port}",
            "--logger", "zap", "--log-level", "warn",
        ], logs / "etcd.log", self.output)
        self.apiserver = KubeProcess("kube-apiserver", [
            str(self.binaries.apiserver),
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(port), "--insecure-port", "0",
            "--tls-cert-file", str(self.pki / "apiserver.crt"),
            "--tls-private-key-file", str(self.pki / "apiserver.key"),
            "--client-ca-file", str(self.pki / "ca.crt"),
            "--token-auth-file", str(self.state_dir / "tokens.csv"),
            "--anonymous-auth=false", "--authorization-mode", "RBAC",
            "--service-account-key-file", str(self.pki / "sa.key"),
            "--service-account-signing-key-file", str(self.pki / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", "10.96.0.0/24",
            "--allow-privileged=false", "--profiling=false",
            "--cert-dir", str(self.pki),
            # No kubernetes Service endpoints: 127.0.0.1 is not a valid endpoint address and
            # there is no cluster network to point it at.
            "--endpoint-reconciler-type", "none",
            "--v", "0",
        ], logs / "kube-apiserver.log", self.output)
        await self.etcd.start()
        await self.apiserver.start()
        await self.wait_ready()
        kubeconfig_text = kubeconfig(self.url, self.pki / "ca.crt", ADMIN_USER,
                                     self.tokens[ADMIN_USER], self.namespace)
        _write_private(self.kubeconfig_path, kubeconfig_text.encode())
        reconciler_text = kubeconfig(self.url, self.pki / "ca.crt", RECONCILER_USER,
                                     self.tokens[RECONCILER_USER], self.namespace)
        _write_private(self.reconciler_kubeconfig_path, reconciler_text.encode())

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until `/readyz` answers 200 to the admin; raises TimeoutError with the reason."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        headers = {"Authorization": f"Bearer {self.tokens[ADMIN_USER]}"}
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        async with httpx.AsyncClient(verify=context, headers=headers, timeout=5.0) as client:
            while time.monotonic() < deadline:
                try:
                    response = await client.get(f"{self.url}/readyz")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last = str(exc) or type(exc).__name__
                await asyncio.sleep(0.25)
        tail = "\n".join(self.apiserver.tail) if self.apiserver else ""
        raise TimeoutError(f"kube-apiserver at {self.url} was not ready in {timeout_s:g} s: "
                           f"{last}; its last lines ({self.state_dir}/logs):\n{tail}")

    async def stop(self) -> None:
        for process in (self.apiserver, self.etcd):
            if process is not None:
                await process.stop()

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "kubeconfig": str(self.kubeconfig_path),
                "apiserver_pid": self.apiserver.pid if self.apiserver else None,
                "etcd_pid": self.etcd.pid if self.etcd else None}
