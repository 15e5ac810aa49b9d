"""Anthropic's Messages API: translated onto chat completions, and typed events back into its frames."""
