"""Thin HTTP handlers: parse, call the services, render."""
