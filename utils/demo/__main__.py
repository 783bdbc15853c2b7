import sys

from utils.demo import main

sys.exit(main())
