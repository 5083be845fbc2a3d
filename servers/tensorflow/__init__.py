"""TensorFlow backend: SavedModels in process, or a TF Serving backend over gRPC.

Needs the `tensorflow` extra (`pip install '.[tensorflow]'`); `signatures` alone does not.
"""
