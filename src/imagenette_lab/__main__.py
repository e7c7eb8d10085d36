from imagenette_lab.cli import main

raise SystemExit(main())
