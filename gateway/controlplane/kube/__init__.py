"""The Kubernetes side of the control plane: a real API server on the laptop
(`apiserver.py`), the InferenceService CRD (`crd.py`), `kubectl apply`'s semantics for the
manifests `up` is given (`applying.py`), and the reconciler that serves what an API server holds
on the local platform (`reconciler.py`)."""
