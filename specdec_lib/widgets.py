"""Compatibility import: the pages moved to `specdec_lib.pages` (one module per page). Older notebooks written
`from specdec_lib import widgets as ui` keep working."""

from specdec_lib.pages import *  # noqa: F401,F403
from specdec_lib.pages import __all__  # noqa: F401
