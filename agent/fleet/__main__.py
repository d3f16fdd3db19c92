import sys

from agent.fleet.cli import main

sys.exit(main())
