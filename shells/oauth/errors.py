"""What goes wrong getting a downstream server's OAuth token, in words a client may read."""

from __future__ import annotations

__all__ = ["OAuthProblem"]


class OAuthProblem(Exception):
    """No token the server takes can be had now.

    ``reason`` says why, with no secret in it; ``login`` says whether a
    person logging in (``lockgate auth login``) would help, rather than a
    change of configuration or a server coming back.
    """

    def __init__(self, reason: str, *, login: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.login = login
