"""TensorRT engines derived from installed models: a store concern, beside the store.

An engine is a file kept in the model store next to the signed model it was built
from, keyed by GPU and TensorRT version, and pruned with the store's versions, so its
housekeeping lives here; the compile itself is ``agent.inference.trt_build``.
builder (stage step), cache (keep/prune), policy (pure choices), rebuild, refresh.
"""
