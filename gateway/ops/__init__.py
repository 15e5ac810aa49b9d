"""Operations: metrics, the request wrapper (request ids, log lines), JSON logs and the shutdown drain."""
