"""Where the controller keeps its per-user files (the hosts file, the cookie)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "clusterctl"


def config_dir() -> Path:
    """The per-user config directory: ``$XDG_CONFIG_HOME/clusterctl`` (default
    ``~/.config/clusterctl``), ``~/Library/Application Support/clusterctl`` on macOS.

    The same directory as ``click.get_app_dir("clusterctl")``, so files made by earlier
    versions are found, without importing click below the command line.
    """
    if sys.platform == "darwin":
        return Path(os.path.expanduser("~/Library/Application Support"), APP_NAME)
    return Path(os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config")), APP_NAME)
