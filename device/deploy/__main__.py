import sys

from device.deploy.cli import main

sys.exit(main())
