"""The asyncio MQTT client against a real broker (driven with asyncio.run, no plugin needed)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from conftest import PASSWORD, Broker, unique
from ringmq import AsyncRingmqClient, Payload, RingmqConnectionError


def aclient(broker: Broker, **kw: Any) -> AsyncRingmqClient:
    kw.setdefault("username", "tester")
    kw.setdefault("password", PASSWORD)
    return AsyncRingmqClient(host=broker.host, port=broker.port, **kw)


async def wait_subscribed(broker: Broker, client_id: str, n: int) -> None:
    api = broker.api()
    try:
        for _ in range(200):
            s = await asyncio.to_thread(api.sessions.get, client_id)
            if len(s.subscriptions) >= n:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("not subscribed")
    finally:
        api.close()


def test_async_round_trip_sync_and_async_handlers(broker: Broker) -> None:
    base = unique("aio")

    async def main() -> list[tuple[str, str, Payload]]:
        got: asyncio.Queue[tuple[str, str, Payload]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        c = aclient(broker)

        @c.on_message(f"{base}/async/#", qos=1)
        async def on_async(topic: str, payload: Payload) -> None:
            assert asyncio.get_running_loop() is loop
            await asyncio.sleep(0)
            await got.put(("async", topic, payload))

        @c.on_message(f"{base}/sync/#")
        def on_sync(topic: str, payload: Payload) -> None:
            assert asyncio.get_running_loop() is loop  # called on the event loop's thread
            got.put_nowait(("sync", topic, payload))

        await c.connect()
        try:
            assert c.is_connected
            await wait_subscribed(broker, c.client_id, 2)
            await c.publish(f"{base}/async/a", {"k": "v"}, qos=1, wait=True)
            await c.publish(f"{base}/sync/b", "text")
            await c.publish(f"{base}/sync/c", b"\x80\x81")
            return [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
        finally:
            await c.disconnect()

    received = asyncio.run(main())
    assert sorted(received, key=lambda r: r[1]) == [
        ("async", f"{base}/async/a", {"k": "v"}),
        ("sync", f"{base}/sync/b", "text"),
        ("sync", f"{base}/sync/c", b"\x80\x81"),
    ]


def test_async_handler_exception_logged_and_loop_forever(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    base = unique("aioboom")

    async def main() -> list[Payload]:
        seen: list[Payload] = []
        c = aclient(broker)

        @c.on_message(f"{base}/#")
        async def h(topic: str, payload: Payload) -> None:
            if payload == "boom":
                raise RuntimeError("async handler failed")
            seen.append(payload)
            if payload == "stop":
                await c.disconnect()

        async with c:
            await wait_subscribed(broker, c.client_id, 1)
            await c.publish(f"{base}/x", "boom")
            await c.publish(f"{base}/x", "ok")
            await c.publish(f"{base}/x", "stop")
            await asyncio.wait_for(c.loop_forever(), 10)
        return seen

    with caplog.at_level(logging.ERROR, logger="ringmq"):
        seen = asyncio.run(main())
    assert seen == ["ok", "stop"]
    assert any(r.exc_info and "async handler failed" in str(r.exc_info[1]) for r in caplog.records)


def test_async_refused(broker: Broker) -> None:
    async def main() -> None:
        c = aclient(broker, password="not-the-password")
        await c.connect()

    with pytest.raises(RingmqConnectionError) as ei:
        asyncio.run(main())
    assert ei.value.reason_code is not None
