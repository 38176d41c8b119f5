"""`python -m doitray.cli …`, the same as `doitray …`."""
import sys

from doitray.cli import main

sys.exit(main())
