"""The official MCP conformance suite (``@modelcontextprotocol/conformance``), run against Lockgate.

``fixture_server.py`` is the server the suite's server scenarios expect;
``run.py`` runs the suite against it directly and through ``lockgate serve``
and compares the failures through Lockgate with ``expected-failures.txt``
(``make conformance-official``, part of ``make test``). ``run.py``'s
docstring says how.
"""
