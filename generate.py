"""Shim so ``python generate.py [overrides]`` works from a checkout; see prefdistill/generate.py."""

from prefdistill.generate import main

if __name__ == "__main__":
    main()
