from cryptovault.cli import main

raise SystemExit(main())
