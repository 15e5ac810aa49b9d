"""The workflow step specs' old import path, kept for plugins that add steps: :mod:`gateway.config.workflow_steps`."""

from gateway.config.workflow_steps import *  # noqa: F403
from gateway.config.workflow_steps import __all__ as __all__
