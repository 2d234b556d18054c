import sys

from polymax.cli import main

sys.exit(main())
