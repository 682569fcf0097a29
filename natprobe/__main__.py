import sys

from natprobe.cli import main

sys.exit(main())
