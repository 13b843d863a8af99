"""Test setup: CPU only, with 4 forced host devices so sharding can be tested.

These must be set before JAX is first imported.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
