"""``python -m authsidecar``: same as the ``authsidecar`` console script."""

from authsidecar.cli import main

raise SystemExit(main())
