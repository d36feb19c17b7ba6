"""Lockgate's sans-IO core: parsed events and configuration in, actions out.

Embed it as a library: build a :class:`Gateway` from a :class:`Config`, feed
it events, perform the actions it returns. Nothing here does I/O, reads a
clock or draws random numbers, so identical event sequences give identical
action sequences.
"""

__version__ = "0.1.0"
