"""The HTTP edge: ASGI dispatch, auth, request/response I/O, metrics."""
