"""The load generator `modelserve loadtest` drives: Locust users for KServe v1, v2 JSON and
binary over REST, v2 gRPC and TF Serving's gRPC Predict (`locustfile.py`), the request bodies
they send (built once from payload files), and the load shapes.

The demo services' payloads and SLOs ship in this package (`demo/`): the defaults of
`modelserve loadtest` and the dashboard when the user gives no files of their own.
"""

from pathlib import Path

__all__ = ["DEFAULT_REPORTS", "DEMO_PAYLOADS", "DEMO_SLO_FILE", "LOCUSTFILE"]

_HERE = Path(__file__).resolve().parent
# What `python -m locust -f` is given: Locust imports a locustfile by its path.
LOCUSTFILE = _HERE / "locustfile.py"
DEMO_PAYLOADS = _HERE / "demo" / "payloads"
DEMO_SLO_FILE = _HERE / "demo" / "slo.yaml"
# Where `modelserve loadtest` writes its reports and the dashboard reads them: relative to the
# working directory, as Locust's own `--csv` and `--html` are.
DEFAULT_REPORTS = Path("loadtest-reports")
