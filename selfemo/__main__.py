import sys

from selfemo.cli import main

sys.exit(main())
