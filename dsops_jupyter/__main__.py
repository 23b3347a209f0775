from dsops_jupyter.cli import main

raise SystemExit(main())
