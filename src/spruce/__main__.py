from spruce.cli import main

raise SystemExit(main())
