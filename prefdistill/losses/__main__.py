"""``python -m prefdistill.losses [--write docs/losses.md]``: print (or write) the table of every registered loss."""

from prefdistill.losses.table import main

main()
