"""The web dashboard, on the control plane's admin door: the page at `/ui`, its JSON API and
the metrics history it samples from the data plane's metrics."""

from gateway.controlplane.api.dashboard.history import MetricsHistory
from gateway.controlplane.api.dashboard.routes import add_dashboard_routes

__all__ = ["MetricsHistory", "add_dashboard_routes"]
