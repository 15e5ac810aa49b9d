"""OpenAI's Responses API: translated onto chat completions, and typed events back into its frames."""
