"""Shim so ``python evaluate.py [overrides]`` works from a checkout; see prefdistill/evaluate.py."""

from prefdistill.evaluate import main

if __name__ == "__main__":
    main()
