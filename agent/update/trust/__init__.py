"""The pure verification chain: given bytes and a trusted root, decide; never touch IO.

crypto (Ed25519 over DSSE PAE), envelope (signed JSON), root (roles, thresholds,
rotation), manifest (parsing), policy (targeting, versions, floors), verify (the order
of checks), state (trust floors as data). Disk lives in ``agent.update.store.truststore``.
"""
