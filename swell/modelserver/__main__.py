import sys

from swell.modelserver import main

sys.exit(main())
