"""The workflow step specs' old import path, kept for plugins that add steps:
:mod:`minigate.gateway.config.workflow_steps`."""

from minigate.gateway.config.workflow_steps import *  # noqa: F403
from minigate.gateway.config.workflow_steps import __all__ as __all__
