"""The job's summary: start-up apart from throughput."""

from __future__ import annotations

import json

from streams.rollout.job import JobSummary


def test_rate_after_start_up_leaves_out_the_first_batch_and_the_time_before_it() -> None:
    summary = JobSummary()
    assert summary.steady_rate is None
    summary.outcomes["written"] = 256
    summary.first_write_s, summary.first_write_encoded = 8.0, 256
    summary.seconds = 8.0
    assert summary.steady_rate is None  # one batch: no rate after it yet
    summary.outcomes["written"] = 2256
    summary.seconds = 28.0
    assert summary.steady_rate == 100.0  # 2,000 listings in the 20 s after the first batch
    line = json.loads(summary.to_json())
    assert line["startup_seconds"] == 8.0 and line["encoded"] == 2256


def test_a_run_that_wrote_nothing_has_no_start_up() -> None:
    summary = JobSummary(seconds=3.0)
    assert json.loads(summary.to_json())["startup_seconds"] is None
    assert summary.steady_rate is None
