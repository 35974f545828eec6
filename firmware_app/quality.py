"""A call's audio quality at its end, from PJSUA2's RTCP statistics, with an E-model MOS estimate.

The E-model (ITU-T G.107, simplified as G.107 Appendix and most VoIP monitors do): R = 93.2 - Id - Ie_eff,
with the delay impairment Id from the one-way delay (half the RTCP round trip, plus the jitter buffer) and
the equipment impairment Ie_eff from the packet loss (G.711 with packet loss concealment: Ie 0, Bpl 25.1).
MOS = 1 + 0.035 R + R (R - 60)(100 - R) 7e-6. An estimate for a fleet's dashboard, not a listening test.
"""

from __future__ import annotations

from dataclasses import dataclass

#: G.711 with packet-loss concealment (G.113 Appendix I): the codec the phone's peers use most.
IE, BPL = 0.0, 25.1


@dataclass(frozen=True, slots=True)
class CallQuality:
    """What a call's media reported at its end; times in milliseconds."""

    call_id: int
    rx_packets: int
    rx_lost: int
    tx_packets: int
    tx_lost: int  # as the far end reported in its RTCP
    jitter_ms: float  # the mean interarrival jitter of what the phone received
    jitter_max_ms: float
    rtt_ms: float  # the mean RTCP round-trip time; 0 when no RTCP report came back
    mos: float

    @property
    def rx_loss_percent(self) -> float:
        total = self.rx_packets + self.rx_lost
        return round(100.0 * self.rx_lost / total, 2) if total else 0.0


def mos(loss_percent: float, rtt_ms: float, jitter_ms: float, jitter_buffer_ms: float = 60.0) -> float:
    """The E-model's MOS for this loss, round trip and jitter (1.0 .. 4.5)."""
    delay = rtt_ms / 2 + jitter_buffer_ms + 2 * jitter_ms
    delay_impairment = 0.024 * delay + (0.11 * (delay - 177.3) if delay > 177.3 else 0.0)
    loss = max(0.0, min(100.0, loss_percent))
    loss_impairment = IE + (95 - IE) * loss / (loss + BPL)
    r = 93.2 - delay_impairment - loss_impairment
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return round(1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6, 2)


def quality(call_id: int, rx_packets: int, rx_lost: int, tx_packets: int, tx_lost: int, jitter_ms: float,
            jitter_max_ms: float, rtt_ms: float) -> CallQuality:
    total = rx_packets + rx_lost
    loss = 100.0 * rx_lost / total if total else 0.0
    return CallQuality(call_id, rx_packets, rx_lost, tx_packets, tx_lost, round(jitter_ms, 2), round(jitter_max_ms, 2),
                       round(rtt_ms, 2), mos(loss, rtt_ms, jitter_ms))
