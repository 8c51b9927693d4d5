"""``python -m verl_ext.main config=RECIPE.yaml [key=value ...]`` (also ``python -m verl.trainer.main``)."""

import sys

from verl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main())
