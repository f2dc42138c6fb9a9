"""Licence gauges for Prometheus, refreshed from the database at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession

from app.licensing.service import LicenseStatus, statuses

STATES = ("ok", "warning", "critical", "exhausted")


class LicenseSnapshot(Collector):
    def __init__(self) -> None:
        self.rows: list[LicenseStatus] = []

    async def refresh(self, session: AsyncSession, now: datetime) -> None:
        self.rows = await statuses(session, now)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily("ponyserve_license_images_used", "Images generated in the licence's cap period.",
                                 labels=["license"])
        reserved = GaugeMetricFamily("ponyserve_license_images_reserved", "Images of accepted, unfinished jobs.",
                                     labels=["license"])
        cap = GaugeMetricFamily("ponyserve_license_image_cap", "The licence's image cap (absent if none).",
                                labels=["license"])
        ratio = GaugeMetricFamily("ponyserve_license_usage_ratio", "(used + reserved) / cap.", labels=["license"])
        warn = GaugeMetricFamily("ponyserve_license_warning_threshold", "The licence's warning thresholds.",
                                 labels=["license", "level"])
        state = GaugeMetricFamily("ponyserve_license_state", "1 for the licence's current state.",
                                  labels=["license", "state"])
        revenue = GaugeMetricFamily("ponyserve_license_revenue_ratio", "Trailing-12-month revenue / revenue cap.",
                                    labels=["license"])
        for row in self.rows:
            lic = row.terms.id
            used.add_metric([lic], row.used)
            reserved.add_metric([lic], row.reserved)
            if row.cap is not None:
                cap.add_metric([lic], row.cap)
                ratio.add_metric([lic], row.fraction or 0.0)
            for level, threshold in zip(("warning", "critical"), row.terms.warning_thresholds[:2] if
                                        len(row.terms.warning_thresholds) > 1 else
                                        row.terms.warning_thresholds * 2, strict=True):
                warn.add_metric([lic, level], threshold)
            for s in STATES:
                state.add_metric([lic, s], 1.0 if row.state == s else 0.0)
            if row.revenue_fraction is not None:
                revenue.add_metric([lic], row.revenue_fraction)
        yield from (used, reserved, cap, ratio, warn, state, revenue)


LICENSES = LicenseSnapshot()
REGISTRY.register(LICENSES)
