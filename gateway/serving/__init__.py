"""Serving one call along its chain: typed events and answers out, never bytes (JSON, streams, workflows)."""
