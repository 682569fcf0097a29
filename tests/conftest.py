import os

from hypothesis import settings

pytest_plugins = ["natlab.pytest_plugin"]

# CI runs the property tests on a fixed seed sequence (no flakiness across runs); locally
# they explore new examples each time. No deadline: a loaded 2-core machine is slow.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
