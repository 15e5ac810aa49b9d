"""Plugins: the hook specs a plugin author reads, the loader, and the built-in workflow steps as a plugin."""
