"""chatlab: a teaching lab kit for TCP socket programming, built around a chat server.

The package reads bottom-up, each layer using only the ones before it:

* ``limits``    -- every bound the server enforces, named in one place
* ``framing``   -- bytes to lines and length-prefixed frames (no sockets)
* ``protocol``  -- names, text, JSON messages and the two wire modes (no sockets)
* ``core``      -- the chat room's rules: events in, effects out (no sockets)
* ``servers``   -- thin I/O shells that run the core: threads, selectors, asyncio
* ``client``    -- ``ChatClient``, with a send thread and a receive thread
* ``cli``       -- the ``chatlab`` command
"""

__version__ = "0.1.0"
