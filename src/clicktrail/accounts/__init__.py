"""Accounts and access: users with roles, API keys, dashboard sessions, the audit log."""
