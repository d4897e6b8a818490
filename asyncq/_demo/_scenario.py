"""The demo's script: the three stories of DESIGN.md, compressed into `duration` seconds.

Everything is derived from the duration, so the quick run (12 s) and the full run
(60 s) play the same stories at different speeds. Times are seconds from the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_DURATION = 60.0
QUICK_DURATION = 12.0
MIN_DURATION = 8.0

EMAIL_LIMIT = 20  # calls the email provider allows in any `WINDOW`
ENRICHMENT_LIMIT = 10  # calls the enrichment API allows in any `WINDOW`
WINDOW = 1.0  # seconds: both providers count calls in a sliding window this long


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """What happens when, and the limits on each side."""

    duration: float
    email_limit: int = EMAIL_LIMIT
    enrichment_limit: int = ENRICHMENT_LIMIT
    window: float = WINDOW

    # -- the queue's side ------------------------------------------------------

    @property
    def email_rate(self) -> float:
        """Calls per second the queue allows the email destination: 80 % of the
        provider's documented limit (20), so a call that reaches the receiver a
        little late cannot push a window over it."""
        return EMAIL_LIMIT * 0.8

    @property
    def enrichment_rate(self) -> float:
        """Calls per second the queue allows the enrichment destination."""
        return ENRICHMENT_LIMIT * 0.8

    @property
    def crm_ladder(self) -> list[float]:
        """The CRM webhook's retry schedule: "1 min, 5 min, 30 min, 2 h" in
        spirit, short enough that the first webhooks of the outage die."""
        return [round(self.duration * share, 3) for share in (0.02, 0.04, 0.06, 0.08)]

    @property
    def circuit_cooldown(self) -> float:
        return round(self.duration * 0.03, 3)

    @property
    def backlog_depth(self) -> int:
        """The CRM backlog that fires the alert: a tenth of the run's deals."""
        return max(5, round(self.crm_deals * 0.1))

    # -- the bursts ------------------------------------------------------------

    @property
    def submit_until(self) -> float:
        """When the last job is submitted; then the demo waits for the backlog to drain."""
        return self.duration * 0.85

    @property
    def emails(self) -> int:
        """The campaign: as many sends as the email pace delivers in 75 % of the run."""
        return round(self.email_rate * self.duration * 0.75)

    @property
    def crm_deals_per_second(self) -> float:
        return 5.0

    @property
    def crm_deals(self) -> int:
        """Deals that close, one at a time, until `submit_until`."""
        return math.floor(self.crm_deals_per_second * self.submit_until)

    @property
    def contacts_at(self) -> float:
        """When the contact import lands."""
        return self.duration * 0.1

    @property
    def contacts(self) -> int:
        return round(self.enrichment_rate * self.duration * 0.65)

    # -- the receivers' side ---------------------------------------------------

    @property
    def crm_down_at(self) -> float:
        return self.duration * 0.2

    @property
    def crm_unreachable_at(self) -> float:
        """Half-way through the outage the CRM stops answering at all
        (connections refused) instead of answering 503."""
        return self.duration * 0.325

    @property
    def crm_up_at(self) -> float:
        return self.duration * 0.45

    @property
    def redrive_at(self) -> float:
        """When the operator redrives the CRM's dead letters, once it is back."""
        return self.duration * 0.5

    @property
    def push_back_at(self) -> float:
        """When the enrichment API, busy, answers one call with 429 + Retry-After."""
        return self.duration * 0.4

    @property
    def push_back_for(self) -> int:
        """The Retry-After it sends: whole seconds, as HTTP has it."""
        return max(1, round(self.duration * 0.05))

    @property
    def deadline(self) -> float:
        """When the demo gives up waiting: a job still not delivered then is lost."""
        return self.duration * 1.5 + 10

    @property
    def sample_every(self) -> float:
        """Seconds between two snapshots of the queue's stats."""
        return 0.25 if self.duration < 30 else 0.5


def scenario_for(
    duration: float,
    *,
    email_limit: int = EMAIL_LIMIT,
    enrichment_limit: int = ENRICHMENT_LIMIT,
) -> Scenario:
    """A scenario lasting about `duration` seconds; refuses one too short to play."""
    if not math.isfinite(duration) or duration < MIN_DURATION:
        raise ValueError(f"--duration must be at least {MIN_DURATION:g} seconds")
    if email_limit < 1 or enrichment_limit < 1:
        raise ValueError("a receiver's limit must be at least 1 call per second")
    return Scenario(duration=duration, email_limit=email_limit, enrichment_limit=enrichment_limit)
