"""Who clicked: device, OS and browser from the user agent, country from the IP, the bot verdict and
the unique flag, computed on the hot path from in-process data only (no network, no database)."""

from clicktrail.clicks.enrichment.enricher import Enricher, Visitor

__all__ = ["Enricher", "Visitor"]
