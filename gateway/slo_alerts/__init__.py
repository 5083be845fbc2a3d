"""Alerts on the SLO file's targets that Prometheus itself evaluates: recording and alerting
rules over the gateway's metrics (`rules`), their documents (`rulefile`: a rule file, or a
prometheus-operator PrometheusRule), and `promtool test rules` files generated from the same
SLOs (`promtool_tests`). `modelserve slo-rules` writes them.
"""

from gateway.slo_alerts.promtool_tests import TEST_FILES, build_tests
from gateway.slo_alerts.rulefile import RuleFile, prometheus_rule, to_yaml
from gateway.slo_alerts.rules import build_rules, header

__all__ = ["TEST_FILES", "RuleFile", "build_rules", "build_tests", "header", "prometheus_rule",
           "to_yaml"]
