"""Click intake: parse the tracking-link request, mint the click ID, build the row and the redirect."""
