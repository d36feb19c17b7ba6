"""Lockgate's trio shells: they move bytes between peers and the core."""
