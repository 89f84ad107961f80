"""A test postback: the source's template filled with sample values and sent once, now, through the
same guard and client as real deliveries; the result is shown to the user and recorded nowhere."""

from clicktrail.delivery.sender import AttemptResult, PostbackSender
from clicktrail.delivery.template import postback_url, sample_values
from clicktrail.errors import ValidationFailed


async def send_test_postback(sender: PostbackSender, source_id: int, template: str | None) -> AttemptResult:
    if not template:
        raise ValidationFailed("the source has no postback_url to test", {"postback_url": "not set"})
    return await sender.send(postback_url(template, sample_values(source_id)))
