"""An example pctkit plugin: the ``stair_cnn`` backbones, the ``pyramid_sum`` head and the
``self_training`` method.

The backbone and head are plain PyTorch modules built by plain functions, with no pctkit
import; the method is written against pctkit's method contract
(``pctkit.methods.base``). pctkit finds all of them through the entry points declared
in ``pyproject.toml``. Importing this package imports neither pctkit nor torch; pctkit
imports ``backbones``, ``heads`` or ``self_training`` only when a recipe (or ``pctkit
list``) needs them, and those modules import torch only when they build something.
"""

__version__ = "0.2.0"
