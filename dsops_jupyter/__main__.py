"""`python -m dsops_jupyter`: the dsops command line."""

from dsops_jupyter.cli import main

raise SystemExit(main())
