"""The live console's server side: what the page at / shows, kept in memory and bounded.

`ConsoleHub` sees every event on its way to the sink (feed, alerts, thumbnails, score
history); `Snapshots` draws a stream's latest frame only while a viewer asks for it.
server/console.py serves both; static/ is the page (plain HTML, CSS and ES modules).
"""

from streamguard.console.hub import ConsoleHub

__all__ = ["ConsoleHub"]
