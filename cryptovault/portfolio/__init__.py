"""The viewer's portfolio side: watchlists and price alerts (valuation and performance
build on the trading engine)."""
