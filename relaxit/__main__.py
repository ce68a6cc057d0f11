from relaxit.cli import main

raise SystemExit(main())
