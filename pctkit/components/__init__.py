"""Built-in components: plain factories that know nothing of recipes or the engine.

They reach the registry through entry points declared in pctkit's ``pyproject.toml``,
exactly as a third-party plugin's components do.
"""
