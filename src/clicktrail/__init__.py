"""clicktrail: a self-hosted server-to-server postback tracker for affiliate marketing."""

__version__ = "0.1.0"
