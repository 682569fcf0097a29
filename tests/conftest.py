pytest_plugins = ["natlab.pytest_plugin"]
