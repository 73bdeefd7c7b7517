"""Resolvers: parse arguments, call domain code, map results to schema types."""
