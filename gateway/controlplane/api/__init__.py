"""The control plane's own door: the rollout API (`/v1/services`) and the dashboard, served on
the admin port (127.0.0.1:8082 by default) behind admin tokens, never on the data plane's."""
