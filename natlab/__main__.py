import sys

from natlab.cli import main

sys.exit(main())
