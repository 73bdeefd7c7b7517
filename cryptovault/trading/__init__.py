"""Paper trading: balances with holds, a double-entry ledger, orders filled against
the price feed."""
