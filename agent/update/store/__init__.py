"""The update's disk: model store, journal, staging, installer, trial probe, trust state.

models (versioned slot store, atomic pointers), journal (crash-safe phases),
stagefiles (verified copy/link into staging), installer (verify → stage → activate →
trial → commit or roll back), probe (the trial), outcome, faults (kill points for
tests), bundle (local bundles), truststore (root and floors on disk), factory (wiring).
"""
