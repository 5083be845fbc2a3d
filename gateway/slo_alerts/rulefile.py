"""The documents Prometheus reads, as typed models: a rule file, and the `PrometheusRule` that
prometheus-operator turns into one; and the YAML they are written as.

Field names and nesting follow Prometheus's rule file format
(https://prometheus.io/docs/prometheus/latest/configuration/recording_rules/ and
alerting_rules/) and prometheus-operator's `monitoring.coreos.com/v1` PrometheusRule, whose
`spec.groups` is that same list of groups.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AlertingRule",
    "Document",
    "RecordingRule",
    "RuleFile",
    "RuleGroup",
    "prometheus_rule",
    "to_yaml",
]


class Document(BaseModel):
    """A document written for Prometheus's tools: closed, immutable, dumped by alias."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        """The document as Prometheus spells it (`for`, no empty optional fields)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class RecordingRule(Document):
    """`record: NAME` saves `expr` as a new series on every evaluation."""

    record: str
    expr: str
    labels: dict[str, str] | None = None


class AlertingRule(Document):
    """`alert: NAME` fires for each series `expr` returns, once it has for `for_`."""

    alert: str
    expr: str
    for_: str | None = Field(default=None, alias="for")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class RuleGroup(Document):
    """Rules evaluated in order, at the server's evaluation interval."""

    name: str
    rules: list[RecordingRule | AlertingRule]


class RuleFile(Document):
    """What Prometheus's `rule_files:` (and `promtool check rules`) reads."""

    groups: list[RuleGroup]


def prometheus_rule(rules: RuleFile, name: str, labels: dict[str, str]) -> dict[str, Any]:
    """The same groups as a prometheus-operator `PrometheusRule` object."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "labels": labels},
        "spec": rules.dump(),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL of long rules) as `|` blocks, readable in a diff."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(doc: dict[str, Any], header: str = "") -> str:
    """`doc` as YAML in its own key order, after `header` (comment lines, each `# ...`)."""
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return header + body
