"""Export worker metrics with ``ray.util.metrics`` (scraped by Ray's Prometheus endpoint).

Updated once per report interval per worker (not per chunk), tagged by
pipeline and stream.
"""

from __future__ import annotations

from ray.util import metrics

from neuraflow.runtime.stats import LATENCY_BUCKETS_MS, StreamStats

_TAGS = ("pipeline", "stream")


class PrometheusExporter:
    """Counters and a latency histogram for one worker."""

    def __init__(self, pipeline: str, group_id: str) -> None:
        self.pipeline = pipeline
        self.chunks = metrics.Counter("neuraflow_chunks", "Chunks accepted from devices", tag_keys=_TAGS)
        self.samples = metrics.Counter("neuraflow_samples", "Samples accepted (per channel row)", tag_keys=_TAGS)
        self.drops = metrics.Counter("neuraflow_drops", "Chunks dropped by backpressure", tag_keys=_TAGS)
        self.shed = metrics.Counter("neuraflow_shed", "Stale windows shed in real-time mode", tag_keys=_TAGS)
        self.errors = metrics.Counter("neuraflow_device_errors", "Device errors", tag_keys=_TAGS)
        self.reconnects = metrics.Counter("neuraflow_reconnects", "Device reconnects", tag_keys=_TAGS)
        self.queue = metrics.Gauge("neuraflow_queue_depth", "Chunks waiting in a device ring", tag_keys=_TAGS)
        # Ray's Histogram takes one observe() per value; at ~16k chunks/s per worker that
        # costs more than the pipeline, so the pre-aggregated bucket counts are exported as a
        # counter labelled by bucket upper bound (`le`, non-cumulative, ms).
        self.latency = metrics.Counter(
            "neuraflow_latency_ms_bucket", "Chunks per latency bucket (device timestamp to result)",
            tag_keys=(*_TAGS, "le"),
        )
        self._bounds = [str(b) for b in LATENCY_BUCKETS_MS] + ["+Inf"]

    def export(self, stats: dict[str, StreamStats]) -> None:
        for stream_id, st in stats.items():
            tags = {"pipeline": self.pipeline, "stream": stream_id}
            for counter, value in (
                (self.chunks, st.chunks), (self.samples, st.samples), (self.drops, st.drops),
                (self.shed, st.shed), (self.errors, st.errors), (self.reconnects, st.reconnects),
            ):
                if value:
                    counter.inc(value, tags=tags)
            self.queue.set(st.queue_depth, tags=tags)
            for bound, count in zip(self._bounds, st.latency.counts):
                if count:
                    self.latency.inc(count, tags={**tags, "le": bound})
