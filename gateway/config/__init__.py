"""Configuration: the typed config and its parsing (which loads nothing), and the workflow step types."""
