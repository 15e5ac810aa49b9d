"""Plugins: the hook specs a plugin author reads, the loader, and the built-in workflow steps as a plugin.

``from minigate.gateway.plugins import Event, PluginAPI, Rejected, UILink`` keeps working for plugins written before the
hook specs moved to :mod:`minigate.gateway.plugins.hookspecs`.
"""

from minigate.gateway.plugins.hookspecs import Event, PluginAPI, Rejected, UILink

__all__ = ["Event", "PluginAPI", "Rejected", "UILink"]
