"""``python -m pctkit`` (what ``torchrun -m pctkit run RECIPE`` starts on each worker)."""

from pctkit.cli.main import main

if __name__ == "__main__":
    main()
