"""Lockgate's REST API: JSON endpoints beside /mcp, their models, OpenAPI document and documentation pages."""
