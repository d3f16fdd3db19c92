"""Signed model updates, from the wire to the active slot, one package per concern.

- ``trust/``: the pure verification chain (signatures, envelopes, root and roles,
  manifests, policy, trust state as data). Imports nothing that does IO; tested so.
- ``store/``: everything that touches the device's disk for updates: the model store
  and its pointers, the journal, staging, the installer and its trial probe, the
  persisted trust state, local bundles and fault points.
- ``engines/``: TensorRT engines derived from installed models (build step, cache,
  pruning policy, rebuild after an upgrade, background refresh).
- ``transfer/``: the wire: chunk transfer over MQTT, the HTTPS source, the op reports,
  and the update service that drives it all in the daemon.
"""
