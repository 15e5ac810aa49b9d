"""Plugins shipped with minigate as examples; each is enabled by listing it in the config's ``plugins.modules``."""
