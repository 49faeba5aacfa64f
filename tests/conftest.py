"""The suite's shared fixtures live in :mod:`tests.support.fixtures`."""

pytest_plugins = ["tests.support.fixtures"]
