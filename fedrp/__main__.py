import sys

from fedrp.cli import main

sys.exit(main())
