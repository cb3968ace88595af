"""Built-in segmentation heads."""
