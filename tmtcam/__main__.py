"""``python -m tmtcam`` = the ``tmtcam`` console script."""

import sys

from tmtcam.cli import main

if __name__ == "__main__":
    sys.exit(main())
