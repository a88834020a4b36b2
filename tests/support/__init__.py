"""Helpers the tests import as plain modules (fixtures stay in the conftest.py files)."""
