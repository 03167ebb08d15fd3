"""Shim so ``python train.py [overrides]`` works from a checkout; see prefdistill/train.py."""

from prefdistill.train import main

if __name__ == "__main__":
    main()
