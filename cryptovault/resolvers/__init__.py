"""Resolvers: parse arguments, authorize (access.py), call domain code and return
domain values and documents; schema/ maps them to its types. Never imports schema/
(tests/test_layers.py)."""
