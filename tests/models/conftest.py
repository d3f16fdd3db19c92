"""Real models from registry wheels (tools/fetch_assets.py), each against its reference."""
