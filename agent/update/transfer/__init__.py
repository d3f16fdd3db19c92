"""The wire: pull-based chunk transfer of model bundles over MQTT, and the HTTPS source.

Pure pieces (bitmap, window planner, wire frames, chunk table) are separate from the
IO that uses them (part files, session, pull, https_*), so the decisions can be tested
without a broker. ``service`` drives a deployment (verify, fetch, install, report);
``pull`` is the MQTT chunk pull; ``settings`` what the service is given.
"""
