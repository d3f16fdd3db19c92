"""``edge-fleet console``: the operator's web console (issue 20).

Needs the ``console`` extra (Starlette, uvicorn, Jinja2); the device install does not.
Pure parts (series, state, rollout bookkeeping) import nothing from the web stack.
"""
