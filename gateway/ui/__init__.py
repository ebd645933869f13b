"""The web dashboard at /ui: server-rendered pages, one stylesheet and one script shipped in the package.

The routes are in `routes.py`. This file imports nothing, so that the pages, which import their neighbours
(`from gateway.ui import views`), make no import cycle with the package.
"""
