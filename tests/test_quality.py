"""The E-model MOS estimate: known points of ITU-T G.107's curve for G.711 with concealment."""

from __future__ import annotations

import pytest

from firmware_app.quality import mos, quality


def test_a_clean_lan_call_is_toll_quality():
    assert mos(0.0, rtt_ms=2.0, jitter_ms=0.5) == pytest.approx(4.4, abs=0.05)


@pytest.mark.parametrize(("loss", "at_most"), [(1.0, 4.3), (5.0, 3.9), (20.0, 2.6)])
def test_loss_lowers_it(loss, at_most):
    assert mos(loss, rtt_ms=20.0, jitter_ms=2.0) <= at_most


def test_long_delays_lower_it_and_the_scale_is_bounded():
    assert mos(0.0, rtt_ms=600.0, jitter_ms=0.0) < mos(0.0, rtt_ms=100.0, jitter_ms=0.0) < 4.5
    assert mos(100.0, rtt_ms=5000.0, jitter_ms=500.0) == 1.0


def test_quality_from_rtcp_figures():
    q = quality(7, rx_packets=990, rx_lost=10, tx_packets=1000, tx_lost=0, jitter_ms=3.2, jitter_max_ms=9.9, rtt_ms=40.0)
    assert q.rx_loss_percent == 1.0 and q.call_id == 7 and 3.9 < q.mos < 4.4
