"""Every commit that queues outbound postbacks wakes the dispatchers. A wake-up for sources that are
all paused by their breakers lets the dispatcher sleep on (their jobs wait for the source's probe, so
a claim would find nothing to send), while a job for any other source is sent at once."""

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from clicktrail.catalog.models import CampaignInput, OfferInput, SourceInput
from clicktrail.config import Settings
from clicktrail.conversions.intake import RawPostback
from clicktrail.storage import delivery_store
from clicktrail.types import utc_now
from clicktrail.web.runtime import Runtime
from tests.delivery_support import TEMPLATE
from tests.receivers import Receiver
from tests.stored import stored_clicks
from tests.support import SECRET_KEY, fresh_database


def test_conversions_for_a_paused_source_do_not_make_the_dispatcher_claim_and_others_still_go_at_once(
    backend: str, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver()
    with fresh_database(backend, tmp_path) as url:
        settings = Settings(
            database_url=url,
            secret_key=SECRET_KEY,
            analytics_dir=tmp_path / "analytics",
            delivery_allow_hosts="127.0.0.1",
            delivery_poll_seconds=5,  # long: only wake-ups make it claim within the test
        )
        runtime = Runtime(settings, migrate=True)
        offer = runtime.catalog.create_offer(
            OfferInput(name="Offer", url="https://m.example/?c={click_id}", revenue="10", payout="4")
        )
        down = runtime.catalog.create_source(SourceInput(name="Down", postback_url=partner.url + "/down"))
        up = runtime.catalog.create_source(SourceInput(name="Up", postback_url=partner.url + TEMPLATE))
        paused_campaign, healthy_campaign = (
            runtime.catalog.create_campaign(CampaignInput(name=name, source_id=source.id, offer_id=offer.id))
            for name, source in (("to the down source", down), ("to the up source", up))
        )
        runtime.cache.reload()
        now = utc_now()
        with runtime.database.begin() as connection:
            delivery_store.save_breaker(
                connection,
                down.id,
                {"state": "open", "failures": 3, "reason": "answered 503", "opened_at": now,
                 "probe_at": now + timedelta(hours=1), "updated_at": now},
            )  # fmt: skip
        paused_clicks = stored_clicks(runtime, paused_campaign, 20)
        [healthy_click] = stored_clicks(runtime, healthy_campaign)

        def convert(click_id: str) -> None:
            [outcome] = runtime.postbacks.handle_batch(
                [RawPostback("GET", {"click_id": click_id, "event": "sale", "txid": "t"}, "203.0.113.9")]
            )
            assert outcome.decision.value == "accepted"

        async def scenario() -> tuple[int, float]:
            await runtime.start()
            try:
                while runtime.dispatcher.claims == 0:  # its first claim, at start, reads the breakers
                    await asyncio.sleep(0.01)
                before = runtime.dispatcher.claims
                for click_id in paused_clicks:
                    await asyncio.to_thread(convert, click_id)
                    await asyncio.sleep(0.03)  # longer than a woken dispatcher gathers a burst
                claims_while_paused = runtime.dispatcher.claims - before
                sent = time.time()
                await asyncio.to_thread(convert, healthy_click)
                [call] = await asyncio.to_thread(partner.wait_for_calls, 1, 3)
                return claims_while_paused, call.at - sent
            finally:
                await runtime.stop()

        claims_while_paused, lag = asyncio.run(scenario())

    # 20 wake-ups, each of which claimed before; what the first claim read is trusted for a second,
    # so the ~1 s of conversions may cost one more claim that reads the breakers again.
    assert claims_while_paused <= 1
    assert lag < 1.0
    assert [call.path for call in partner.calls] == ["/pb"]
