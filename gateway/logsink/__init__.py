"""`modelserve logsink`: a sink for payload logging (KServe's `logger:`) to look at.

It receives the CloudEvents a component's logger sends (HTTP binary or structured mode,
parsed by the `cloudevents` SDK), appends each to a JSON-lines file, one event in the
CloudEvents JSON format per line, and keeps the last few per InferenceService in memory for
`GET /events`, which the control plane's dashboard reads. It has no authentication: it
listens on loopback unless told otherwise.
"""

from gateway.logsink.events import LoggedEvent, NotACloudEvent, parse_event
from gateway.logsink.server import LogSink
from gateway.logsink.settings import LogSinkSettings

__all__ = ["LogSink", "LogSinkSettings", "LoggedEvent", "NotACloudEvent", "parse_event"]
