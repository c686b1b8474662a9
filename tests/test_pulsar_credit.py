"""What a Pulsar consumer may hold on the server: nacked messages count against its credit, and a
``disabled`` topic's dropped messages are logged once per stretch (docs/architecture.md 18.4)."""

from __future__ import annotations

from tests.protocol import eventually, make_topic, send_json
from tests.pulsar_client import ack, consumer, message, producer, quiet, send
from tests.servers import ServerProcess


async def test_nacked_messages_use_the_consumers_credit(server: ServerProcess) -> None:
    """receiverQueueSize=2, both nacked with a long delay: nothing more is sent until one is acked."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="receiverQueueSize=2&negativeAckRedeliveryDelay=600000")
    marker = await consumer(server, slug, "marker")
    prod = await producer(server, slug)
    ids = [await send(prod, n) for n in range(4)]
    first = [await message(ws) for _ in range(2)]
    for frame in first:
        await send_json(ws, {"type": "negativeAcknowledge", "messageId": frame["messageId"]})
    for _ in ids:
        await message(marker)
    await quiet(ws)
    await ack(ws, first[0])  # an ack of a nacked message waiting for redelivery frees its credit
    assert (await message(ws))["messageId"] == ids[2]
    await quiet(ws)


async def test_disabled_topic_logs_drops_once_per_stretch(server: ServerProcess) -> None:
    """A disabled topic's subscription dropping several waiting messages in a row logs one WARNING."""
    slug = make_topic(dasf=False, policy="disabled")
    await consumer(server, slug, query="pullMode=true&receiverQueueSize=1")
    marker = await consumer(server, slug, "marker")
    prod = await producer(server, slug)
    for n in range(5):
        await send(prod, n)
        await message(marker)

    def warnings() -> list[str]:
        return [line for line in server.output if slug in line and "oldest" in line]

    await eventually(lambda: len(warnings()) >= 1, message="the drop logged")
    await quiet(marker, 0.3)  # bounded: later warnings would have been printed by now
    assert len(warnings()) == 1, warnings()
