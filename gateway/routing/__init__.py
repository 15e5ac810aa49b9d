"""Routing: model name to an ordered list of deployments, the fallback loop over them, and cooldowns."""
