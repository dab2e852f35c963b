import sys

from restyle.cli import main

sys.exit(main())
