"""When a request would be answered on a platform, and what it would cost there: the
SLO-aware rule's predictions, from the live view and the policy's platform settings.

    latency = wait for a slot + service time for the request's size + transfer
              + probability of a cold start x cold-start time

- service time: the 95th percentile the instance reports for requests of about this size
  (its size bucket, else the nearest bucket with requests, else its recent p95; of a bucket
  of fewer than 20 requests, their slowest). A percentile, not the median: an objective is
  met or missed per request, and a platform whose median is just within it misses it for
  nearly half of them. Adapters forget requests after 30 s, so a platform the rule stopped
  choosing reports nothing and is measured again: unmeasured, it is predicted at no service
  time, and while one request (a probe) is on its way there it is marked `probing`: the rule
  sends it another only when no other platform can take the request;
- wait: none while the platform has a free slot; otherwise the requests ahead of it in the
  queue of the instance it would go to (the one with most queue room), drained by that
  instance's slots at one median service time each; a full platform without queue room (Lambda at
  its concurrency limit), or a full one not measured yet, cannot take the request: no
  prediction (an unmeasured platform is tried with free slots only, never with a queue);
- cold start: certain when the free slot is not in a warm environment (a new container or
  Lambda environment must start), none otherwise; its time is the instance's recent median;
- transfer: the platform's network round trip plus the payload at its bandwidth.

Cost: per request, plus per GB-second of the platform's memory for the time it runs (Lambda),
plus the instance-hour apportioned to the request's share of the instance (its time on one of
the instance's slots).
"""

from straightline_placer.policy import PlatformSettings
from straightline_placer.registry import PlatformState


def predict(state: PlatformState, size: int, settings: PlatformSettings) -> None:
    """Fills the state's predicted latency (None when it cannot take the request) and cost."""
    if size > settings.max_request_bytes:
        state.predicted_latency_s = None
        return
    stats = state.instance.stats
    state.probing = not stats.measured and _probe_in_flight(state)
    service = stats.service_time_s(size)
    if state.free_slots > 0:
        wait = 0.0
        cold = 0.0 if state.warm_free_slots > 0 else stats.recent_cold_start_s
    elif state.instance_queue_room > 0 and stats.measured:
        wait = (state.instance_queued + 1) * service / max(1, state.instance.capacity_total)
        cold = 0.0
    else:
        state.predicted_latency_s = None
        return
    transfer = settings.network_round_trip_s + size / settings.bandwidth_bytes_per_s
    state.predicted_latency_s = wait + stats.service_time_p95_s(size) + transfer + cold
    state.predicted_cost_usd = cost(service + cold, state.instance.capacity_total, settings)


def _probe_in_flight(state: PlatformState) -> bool:
    """Whether a request is already on its way to, or running on, the unmeasured instance."""
    return state.instance.sent_since_report > 0 or state.instance.stats.in_flight > 0


def cost(busy_s: float, slots: int, settings: PlatformSettings) -> float:
    """What a request that keeps one slot busy for `busy_s` costs on the platform."""
    return (
        settings.price_per_request
        + settings.price_per_gb_second * settings.memory_mb / 1024 * busy_s
        + settings.price_per_instance_hour / 3600 * busy_s / max(1, slots)
    )
