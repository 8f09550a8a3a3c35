"""Serving: load a checked ONNX policy and predict (public API: ``otonom_runtime.policy``).

One module per concern, each importing only those above it:

* ``paths``: model folder layout, ``latest``/``default`` pointers, ``resolve_model_path``;
* ``files``: the sha256 sidecar, the size limit, one verified read of the bytes;
* ``wire``: a minimal protobuf reader (varints, the external-data scan);
* ``contract``: signature, required metadata, state schema, training run of the model;
* ``session``: the onnxruntime session and the pre-bound I/O bindings;
* ``rl_policy``: ``RlPolicy`` and its predict paths with the output contract;
* ``load``: ``load_rl_policy``, every check in order.

The digest and golden sample of model format 2 are ``otonom_runtime.integrity``; the state
builder is ``otonom_runtime.builder``. Nothing is imported here: importing a sub-module costs
only what it needs.
"""

__all__: list[str] = []
