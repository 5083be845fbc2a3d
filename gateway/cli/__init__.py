"""The `modelserve` command line: `up` (the local platform), the clients of its two doors
(`predict`, `loadtest` on the data plane; `apply`, `canary`, `promote`, `rollback`, `status`,
`delete` on the control plane's admin port) and `--kube` rollouts on a cluster."""

from gateway.cli.main import main

__all__ = ["main"]
