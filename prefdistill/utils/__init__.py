"""Small utilities for the entry points: run wrapper, atomic writes, config resolvers."""
