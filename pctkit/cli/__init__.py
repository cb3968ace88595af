"""The ``pctkit`` command line."""
