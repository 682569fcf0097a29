import sys

from rendezvous.cli import main

sys.exit(main())
