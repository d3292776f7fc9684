"""``python -m pcomm`` is the ``pcomm`` command."""

from .cli import main

raise SystemExit(main())
