"""``python -m dlmprompt``: the same as the ``dlmprompt`` command."""

from .cli import main

raise SystemExit(main())
