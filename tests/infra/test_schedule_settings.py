"""The stack refuses a schedule whose ticks would share a monthly run id."""

from __future__ import annotations

import pytest

from dsjob_infra.settings import PipelineSettings, fires_monthly

pytestmark = pytest.mark.infra


@pytest.mark.parametrize(
    ("schedule", "monthly"),
    [
        ("cron(0 9 15 * ? *)", True),  # the default: 09:00 UTC on the 15th
        ("cron(30 6 1 * ? *)", True),
        ("cron(0 0 L * ? *)", True),
        ("cron(0 8 ? * MON#1 *)", True),
        ("cron(0 8 1 1,7 ? *)", True),  # two months a year, once in each
        ("at(2027-01-15T09:00:00)", True),
        ("cron(0 9 * * ? *)", False),  # daily
        ("cron(0 9 1,15 * ? *)", False),
        ("cron(0 9 ? * MON *)", False),  # weekly
        ("cron(0 9,21 15 * ? *)", False),
        ("cron(*/5 9 15 * ? *)", False),
        ("rate(30 days)", False),
    ],
)
def test_a_schedule_is_monthly_only_when_it_fires_at_most_once_a_month(schedule, monthly):
    """Each cron form is classed by how often it can fire in one month."""
    assert fires_monthly(schedule) is monthly


def test_a_schedule_firing_twice_a_month_fails_synth_naming_it():
    """A daily schedule is refused before synth: both ticks of a month would be one run."""
    with pytest.raises(ValueError, match=r"schedule must fire at most once a month.*cron\(0 9 \*"):
        PipelineSettings(environment="dev", schedule="cron(0 9 * * ? *)")
