"""The HTTP layer: lean ASGI edge routes for clicks and postbacks, the admin API, error mapping."""
