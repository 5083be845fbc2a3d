"""`modelserve up --kube-local` and `up --kube`: where the InferenceServices come from when an
API server holds them.

- `--kube-local [FILES]`: start etcd and kube-apiserver on loopback (state in `--kube-dir`,
  default `.kube/`), install the InferenceService CRD (ours, or `--crd FILE`), grant the
  reconciler its Role, write `.kube/kubeconfig` for the user and apply FILES (default
  `inferenceservices/`) as `kubectl apply` does.
- `--kube --kubeconfig FILE`: an API server that exists (a kind cluster, say) with the CRD and
  no KServe controller; the reconciler uses that kubeconfig's credentials (bind them to the
  Role `reconciler_role` prints: get/list/watch InferenceServices, update their status).

Either way the reconciler then serves what the API server holds on the local platform.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cli.kube import KubeError, api_error_message
from gateway.controlplane.kube.apiserver import RECONCILER_USER, KubeLocal
from gateway.controlplane.kube.applying import apply_manifests, grant_reconciler
from gateway.controlplane.kube.crd import inference_service_crd, install_crd, read_crd

__all__ = ["KubeSource", "add_kube_flags", "open_kube_source"]

DEFAULT_KUBE_DIR = Path(".kube")


@dataclass
class KubeSource:
    """An API server to reconcile from: its URL, the reconciler's client, and what to stop."""

    server: str
    namespace: str
    api_client: Any
    local: KubeLocal | None = None
    warnings: list[str] = field(default_factory=list)

    async def close(self) -> None:
        self.api_client.close()
        if self.local is not None:
            await self.local.stop()


def _client(kubeconfig: Path) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)


def _say(line: str) -> None:
    print(line, flush=True)


async def open_kube_source(args: argparse.Namespace, manifests: list[Path]) -> KubeSource:
    """Start (with --kube-local) or connect to (--kube) the API server; raises OSError,
    TimeoutError, ValueError or `KubeError` (what the API server refused) with a one-line
    reason."""
    namespace = args.namespace or "default"
    if not args.kube_local:
        if args.kubeconfig is None or not args.kubeconfig.is_file():
            raise ValueError("--kube needs --kubeconfig FILE (an existing kubeconfig)")
        api_client = await asyncio.to_thread(_client, args.kubeconfig)
        return KubeSource(api_client.configuration.host, namespace, api_client)
    crd = read_crd(args.crd) if args.crd else inference_service_crd()
    local = KubeLocal(args.kube_dir, namespace=namespace)
    _say(f"kube: starting etcd and kube-apiserver ({local.binaries.apiserver}), "
         f"state in {local.state_dir}")
    await local.start()
    try:
        admin = await asyncio.to_thread(_client, local.kubeconfig_path)
        from kubernetes.client.exceptions import ApiException

        try:
            await asyncio.to_thread(install_crd, admin, crd)
            await asyncio.to_thread(grant_reconciler, admin, namespace, RECONCILER_USER)
            lines = await asyncio.to_thread(apply_manifests, admin, manifests, namespace)
        except ApiException as exc:
            raise KubeError(api_error_message(exc, None, namespace)) from exc
        finally:
            admin.close()
        for line in lines:
            _say(line)
        reconciler = await asyncio.to_thread(_client, local.reconciler_kubeconfig_path)
    except BaseException:
        await local.stop()
        raise
    _say(f"kube: API server {local.url} ready; to use kubectl:")
    _say(f"export KUBECONFIG={local.kubeconfig_path}")
    return KubeSource(local.url, namespace, reconciler, local)


def add_kube_flags(up: argparse.ArgumentParser) -> None:
    """`up`'s flags for serving what an API server holds."""
    group = up.add_argument_group("Kubernetes API (the InferenceServices an API server holds)")
    mode = group.add_mutually_exclusive_group()
    mode.add_argument(
        "--kube-local", action="store_true",
        help="start a local kube-apiserver (`make kube` builds it), apply FILES to it, and "
        "serve what it holds; kubectl then drives the platform",
    )
    mode.add_argument(
        "--kube", action="store_true",
        help="serve the InferenceServices of an existing API server (--kubeconfig) that has "
        "the CRD and no KServe controller",
    )
    group.add_argument("--kubeconfig", type=Path, default=None,
                       help="with --kube: the kubeconfig the reconciler uses")
    group.add_argument("--namespace", default=None,
                       help="the namespace to serve (default: default)")
    group.add_argument("--crd", type=Path, default=None,
                       help="with --kube-local: install this CRD (e.g. KServe's) instead of ours")
    group.add_argument("--kube-dir", type=Path, default=DEFAULT_KUBE_DIR,
                       help="with --kube-local: the API server's state (default: .kube)")

