"""An example of a decoder added without touching Relevé: ``decoder = "package.module:function"``."""

from datetime import datetime

from collectors.decoders import Decoded, DecodeError, Message
from releve.model import CHANNELS, Reading, Source


def decode_csv_line(message: Message) -> Decoded:
    try:
        channel, ts, value = message.payload.decode().split(";")
        return Decoded(
            readings=[
                Reading(
                    message.fields["serial"],
                    channel,
                    datetime.fromisoformat(ts.replace("Z", "+00:00")),
                    float(value),
                    CHANNELS[channel].unit,
                    Source.MQTT,
                )
            ]
        )
    except (ValueError, KeyError) as exc:
        raise DecodeError(f"not 'channel;time;value': {exc}") from exc
