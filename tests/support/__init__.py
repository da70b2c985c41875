"""Helpers shared by several test modules, one module per idea, so that no
test module imports another (tests/conftest.py keeps the fixtures and the
server under test). Imported as ``support.NAME``: pytest puts tests/ on
``sys.path``, as tests/conformance/full.py does for itself."""
