"""Market data: the asset catalogue, price feeds, rolling statistics and candles."""
