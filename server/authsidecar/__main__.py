"""``python -m authsidecar``: the command line (cli.py)."""

import signal
import sys

if sys.argv[1:2] == ["serve"]:  # a SIGTERM or SIGINT while the modules load is a clean exit too (nothing to drain;
    # the supervisor stops workers still loading with SIGINT when another could not start: no traceback for that)
    for _signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_signal, lambda signum, frame: sys.exit(0))

from authsidecar.cli import main

sys.exit(main())
