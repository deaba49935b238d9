"""``python -m audit.service worker ...``: the service's commands without the CLI's plugin discovery."""

import sys

from audit.service.cli_commands import main

sys.exit(main())
