"""Frames the broker itself sends to consumers: the DASF ping and api_info probes (docs/dasf-protocol.md section 6)."""

from __future__ import annotations

import uuid

from django.utils import timezone

from app import codec
from app.broker.hub import Delivered
from app.broker.models import STATUS_PING_TOPIC
from consumers.frames import DeliveryFrame


def probe(message_type: str) -> Delivered:
    """A ``ping`` or ``api_info`` request whose answer goes to ``status-ping``; nothing is stored."""
    message_id = str(uuid.uuid4())
    frame = DeliveryFrame.model_construct(
        properties={"requestContext": 1, "messageType": message_type, "response_topic": STATUS_PING_TOPIC},
        payload="",
        messageId=message_id,
        publishTime=timezone.now().isoformat(),
    )
    return Delivered(codec.dump_model(frame), message_id, None)
