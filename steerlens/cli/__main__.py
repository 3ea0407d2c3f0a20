"""``python -m steerlens.cli``: the ``steerlens`` command."""

from steerlens.cli import main

raise SystemExit(main())
