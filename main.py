"""PayTR Billing. `python main.py` serves the app; `python main.py --help` lists operations."""

import sys

from billing.cli import main

if __name__ == "__main__":
    sys.exit(main())
