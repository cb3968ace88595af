"""Values every layer shares: the label of unlabelled pixels and the background class."""

IGNORE_INDEX = 255
"""Mask value of pixels that carry no label: left out of every loss, count and metric."""

BACKGROUND = 0
"""Class index of the background, present in every image."""
