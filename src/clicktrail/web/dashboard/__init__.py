"""The dashboard: server-rendered pages (Jinja2, autoescaped) over the same domain calls as the API."""
