"""Wire protocols translated onto chat completions: requests in, typed events out as the protocol's frames."""
