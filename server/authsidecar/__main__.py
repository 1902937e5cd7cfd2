"""``python -m authsidecar``: the command line (cli.py)."""

import signal
import sys

if sys.argv[1:2] == ["serve"]:  # a SIGTERM while the modules load is a clean exit too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

from authsidecar.cli import main

sys.exit(main())
