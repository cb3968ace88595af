"""Stage-1 training methods: registered components, like backbones and heads.

A method owns its networks and its own state, and says how one micro-batch becomes a
loss (:class:`pctkit.methods.base.Method`). The built-in ones are ``pct`` (progressive
cross training, the method of METHOD.md), ``hybrid`` (the hybrid net alone under image
labels) and ``supervised`` (one net on the strong masks only); a plugin adds its own
through the entry-point group ``pctkit.methods``.
"""
