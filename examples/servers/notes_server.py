"""An offline MCP server "notes": a small in-memory note store.

Run it on its own with ``python examples/servers/notes_server.py`` (it speaks
MCP over stdio), or let Lockgate start it from ``examples/.mcp.json``. The
store lives in the process and starts with two notes, so a fresh server has
something to list and search; nothing touches the disk or the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("notes")


@dataclass(slots=True)
class Note:
    """One note: a unique title and a free-text body."""

    title: str
    body: str


_NOTES: dict[str, Note] = {
    "welcome": Note("welcome", "Lockgate stands between agents and MCP servers."),
    "groceries": Note("groceries", "eggs, flour, milk, coffee"),
}


@app.tool()
def list_notes() -> list[str]:
    """List the titles of all notes, in the order they were added."""
    return list(_NOTES)


@app.tool()
def get_note(title: str) -> str:
    """Return the body of the note with this exact title."""
    note = _NOTES.get(title)
    if note is None:
        raise ToolError(f"no note titled {title!r}")
    return note.body


@app.tool()
def add_note(title: str, body: str) -> str:
    """Add a note, or replace the body of the note with this title."""
    replaced = title in _NOTES
    _NOTES[title] = Note(title, body)
    return f"{'replaced' if replaced else 'added'} note {title!r}"


@app.tool()
def delete_note(title: str) -> str:
    """Delete the note with this exact title."""
    if _NOTES.pop(title, None) is None:
        raise ToolError(f"no note titled {title!r}")
    return f"deleted note {title!r}"


@app.tool()
def search_notes(query: str) -> list[str]:
    """Return the titles of notes whose title or body contains the query (case-insensitive)."""
    needle = query.casefold()
    return [n.title for n in _NOTES.values() if needle in n.title.casefold() or needle in n.body.casefold()]


if __name__ == "__main__":
    app.run("stdio")
