import sys

from nla.cli import main

sys.exit(main())
