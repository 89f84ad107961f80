"""Reports: which campaigns, sources and sub IDs make money, on a columnar copy of the event tables."""
