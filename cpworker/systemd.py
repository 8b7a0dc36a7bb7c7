"""The systemd unit that runs ``cpworker serve`` on a host, shipped as package data.

One copy of the text: ``cpworker systemd-unit`` prints it, ``templates/cpworker.service``
links to it, and the fleet template's user data embeds it (a test keeps them equal).
"""

from __future__ import annotations

from pathlib import Path

UNIT_FILE = Path(__file__).with_name("cpworker.service")


def unit_text() -> str:
    """The unit, to be written to ``/etc/systemd/system/cpworker.service``."""
    return UNIT_FILE.read_text(encoding="utf-8")
