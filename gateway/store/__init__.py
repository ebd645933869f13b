"""Persistence: tables, engine, and the queries each part of the gateway needs."""
