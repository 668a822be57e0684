"""The request pipeline: handler, admission, caching, accounting."""
