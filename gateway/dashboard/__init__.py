"""The gateway's web dashboard: the page at `/ui`, its JSON API and the metrics history."""

from gateway.dashboard.history import MetricsHistory
from gateway.dashboard.routes import add_dashboard_routes
from gateway.dashboard.settings import DashboardSettings

__all__ = ["DashboardSettings", "MetricsHistory", "add_dashboard_routes"]
