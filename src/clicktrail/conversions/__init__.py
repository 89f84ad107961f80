"""Postback intake: parse, verify the click ID, attribute to the click, de-duplicate, log the decision."""
