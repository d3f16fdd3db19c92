"""Pull-based chunk transfer of model bundles over MQTT (device side).

Pure pieces (bitmap, window planner, wire frames, chunk index) are separate from
the IO that uses them (part files, the update service), so the decisions can be
tested without a broker.
"""
