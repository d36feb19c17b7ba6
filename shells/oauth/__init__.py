"""OAuth to downstream servers: the tokens Lockgate gets, keeps sealed and sends for its HTTP downstreams.

- :mod:`.manager`: which connection carries whose token (:class:`OAuthManager`).
- :mod:`.session`: one token, used, refreshed and got anew (:class:`TokenSession`, :class:`DownstreamAuth`).
- :mod:`.provider`: the ``mcp`` SDK's OAuth client, which runs the flow.
- :mod:`.storage`: the tokens and clients in the identity database, sealed.
- :mod:`.loopback`: the redirect URI a login's browser comes back to.
"""

from .errors import OAuthProblem
from .manager import BROWSER_VARIABLE, OAuthManager, desktop, for_front, uses_oauth

__all__ = [
    "BROWSER_VARIABLE",
    "OAuthManager",
    "OAuthProblem",
    "desktop",
    "for_front",
    "uses_oauth",
]
