import atexit
import os
import shutil
import tempfile

from hypothesis import settings

pytest_plugins = ["natlab.pytest_plugin"]

# The programs keep state (the server's key, its database) under XDG_STATE_HOME: tests and
# the processes they start keep theirs in a directory of this run, never in the home.
if "HOLEPUNCH_TEST_STATE" not in os.environ:
    _state = tempfile.mkdtemp(prefix="holepunch-state-")
    atexit.register(shutil.rmtree, _state, True)
    os.environ["HOLEPUNCH_TEST_STATE"] = os.environ["XDG_STATE_HOME"] = _state

# CI runs the property tests on a fixed seed sequence (no flakiness across runs); locally
# they explore new examples each time. No deadline: a loaded 2-core machine is slow.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
