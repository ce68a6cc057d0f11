"""An example third-party relaxit plugin (see :mod:`relaxit_example_plugin.plugin`)."""

from relaxit_example_plugin.plugin import ConstantBaselineReinforce

__all__ = ["ConstantBaselineReinforce"]
