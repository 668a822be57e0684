"""Fixtures that run the gateway and the provider simulator over real sockets."""
