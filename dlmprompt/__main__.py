"""``python -m dlmprompt``: the same as the ``dlmprompt`` command."""

from dlmprompt.cli import main

raise SystemExit(main())
