"""An example pctkit plugin: the ``stair_cnn`` backbones and the ``pyramid_sum`` head.

Nothing here imports pctkit: components are plain PyTorch modules built by plain
functions, and pctkit finds them through the entry points declared in
``pyproject.toml``. Importing this package does not import torch either; pctkit imports
``backbones`` or ``heads`` only when a recipe (or ``pctkit list``) needs them.
"""

__version__ = "0.1.0"
