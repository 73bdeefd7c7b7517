"""Operations side channels: Prometheus metrics and Sentry error reporting."""
