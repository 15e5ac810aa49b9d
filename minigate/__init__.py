"""The installed namespace of minigate's packages."""
