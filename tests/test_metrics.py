"""The hot path's tallies (relay/metrics.py): what a scrape shows is what prometheus_client's own
``inc`` and ``observe`` would have shown, once handed over."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from relay.metrics import HistogramTally, Metrics

LAGS = [0.0, 0.0004, 0.0005, 0.0007, 0.003, 0.01, 0.2, 0.9, 3.0, 99.0]


def test_a_histogram_tally_adds_up_like_observe() -> None:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    buckets = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5)
    plain = Histogram("lag_seconds", "lag", buckets=buckets, registry=direct)
    tally = HistogramTally(Histogram("lag_seconds", "lag", buckets=buckets, registry=tallied))
    for amount in LAGS:
        plain.observe(amount)
        tally.observe(amount)
    assert generate_latest(tallied) != generate_latest(direct)  # nothing handed over yet
    tally.flush()
    tally.flush()  # a second hand-over adds nothing
    assert _without_created(generate_latest(tallied)) == _without_created(generate_latest(direct))


def _without_created(text: bytes) -> list[bytes]:
    return [line for line in text.split(b"\n") if b"_created" not in line]


def test_a_scrape_hands_the_tallies_over() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.count_webhook("evolution", "qrcode.updated", "updated")
    metrics.count_webhook("evolution", "-", "bad_json")
    metrics.count_delivered(5)
    metrics.count_delivered(2)
    for amount in LAGS:
        metrics.observe_lag(amount)
    text = metrics.render().decode()
    assert 'relay_webhooks_total{event="qrcode.updated",outcome="updated",upstream="evolution"} 3.0' in text
    assert 'relay_webhooks_total{event="-",outcome="bad_json",upstream="evolution"} 1.0' in text
    assert "relay_updates_delivered_total 7.0" in text
    assert f"relay_delivery_lag_seconds_count {float(len(LAGS))}" in text
    assert 'relay_delivery_lag_seconds_bucket{le="0.0005"} 3.0' in text
    assert 'relay_delivery_lag_seconds_bucket{le="2.5"} 8.0' in text
    assert 'relay_delivery_lag_seconds_bucket{le="+Inf"} 10.0' in text
    assert f"relay_delivery_lag_seconds_sum {sum(LAGS)}" in text
    again = metrics.render().decode()  # handed over once, not twice
    assert "relay_updates_delivered_total 7.0" in again
