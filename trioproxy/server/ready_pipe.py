"""How a child of ``serve`` tells the supervisor it accepts connections, without Trio.

The supervisor (``runner.py``) starts each child with the write end of a pipe of its own
(``TRIOPROXY_READY_FD``); the child writes one byte once its sockets listen (a data-plane
worker: after its gateway started; the control plane: once hypercorn serves) and closes it.
A child that dies first closes it empty. ``serve`` prints its banner once every child wrote
(a first start builds the embedding model and loads WordNet: seconds in which the data port
refuses connections)."""

from __future__ import annotations

import os

ENV_READY_FD = "TRIOPROXY_READY_FD"


def tell_supervisor() -> None:
    """Once this process listens: one byte down the pipe ``serve`` gave it (none: started
    otherwise, as tests do; a second call does nothing)."""
    raw = os.environ.pop(ENV_READY_FD, "")
    if not raw.isdigit():
        return
    fd = int(raw)
    try:
        os.write(fd, b"\n")
    except OSError:
        pass  # the supervisor is gone
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


__all__ = ["ENV_READY_FD", "tell_supervisor"]
