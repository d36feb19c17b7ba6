"""``python -m lockgate.shells``: the same as the ``lockgate`` command."""

from .cli import main

raise SystemExit(main())
