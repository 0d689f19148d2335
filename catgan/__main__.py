"""``python -m catgan ...`` is the ``catgan`` command."""

from catgan.cli import main

raise SystemExit(main())
