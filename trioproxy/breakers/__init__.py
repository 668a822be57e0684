"""Circuit breakers: pure transitions and their local and shared stores."""
