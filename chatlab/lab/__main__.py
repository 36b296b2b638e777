"""``python -m chatlab.lab serve SPEC``: a server in a child process (the child side of ``ServerProcess``).

The parent reads the ``LISTENING host port`` line this prints, and stops
the child by closing its standard input.
"""

import sys

from .live import _serve_child

if __name__ == "__main__":  # python -m chatlab.lab serve SPEC (used by ServerProcess)
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        sys.exit(_serve_child(sys.argv[2:]))
    print("usage: python -m chatlab.lab serve MODEL|FOLDER:module:Class [--limits JSON]", file=sys.stderr)
    sys.exit(2)
