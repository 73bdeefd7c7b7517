"""Admin oversight: users, freezes, sessions, system statistics."""
