"""The catalog: offers, traffic sources and campaigns (tracking links), and the in-memory routes."""
