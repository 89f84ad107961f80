"""Outbound postbacks: the outbox written by conversions/intake.py, delivered by a dispatcher in each
server process with retries, leases, a circuit breaker per source and an SSRF guard."""
