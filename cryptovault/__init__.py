"""CryptoVault: a GraphQL API for crypto portfolio tracking and paper trading."""

__version__ = "0.1.0"
