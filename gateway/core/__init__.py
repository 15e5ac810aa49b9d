"""The bottom layer: OpenAI wire structs, the error tree, token counts and byte formats; no gateway state."""
