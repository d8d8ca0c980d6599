"""When a request would be answered on a platform, and what it would cost there: the
SLO-aware rule's predictions, from the live view and the policy's platform settings.

    latency = wait for a slot + service time for the request's size + transfer
              + probability of a cold start x cold-start time

- service time: the median of the requests of about this size the instance reports (its size
  bucket, else the nearest bucket with requests, else its recent median). The median, not the
  slowest: the margin (below) carries the tail, measured as the errors of these very
  predictions, so the tail is counted once. Adapters forget requests after 30 s; the placer
  then recalls the figures it last saw (`recollection.py`), and an instance without any is
  `unmeasured`, predicted at no service time: the rule measures it with a copy of a request
  that a measured platform serves (a mirror) and sends it a user's request only when no
  measured platform can take it; while a request or its copy is on its way there it is marked
  `probing`;
- wait: on a free slot, none unless the instance's environments run their requests in series
  (`runs_per_environment`: a model server that batches runs one batch at a time): then the
  requests running beyond what they run side by side go first, at one median service time
  each, shared by the environments (a free slot there is not a free core). With no free slot,
  the requests ahead of it in the queue of the instance it would go to (the one with most
  queue room), drained by that instance's slots at one median service time each; a full
  platform without queue room (Lambda at its concurrency limit), or a full one not measured
  yet, cannot take the request: no prediction (an unmeasured platform is tried with free
  slots only, never with a queue);
- cold start: certain when the free slot is not in a warm environment (a new container or
  Lambda environment must start), none otherwise; its time is the instance's recent median;
- transfer: the platform's network round trip plus the payload at its bandwidth;
- shared cores: platforms whose settings name the same host (Flask and Docker on one machine)
  slow each other down. A request there is predicted at the median service time stretched by
  the host's load: (the requests running on the host's platforms, as the placer's view counts
  them, plus this one) / the host's cores, at least 1. A platform with a free slot that runs
  at once on a host with a core to spare is marked `spare_core` (the SLO-aware rule never
  sheds a request it could start there at once);
- margin: the instance's recent prediction errors at the policy's attainment target, those
  made with as many requests running on its host (`load_level`, up to its cores;
  `calibration.py`), kept apart from the prediction (`PlatformState.margin_s`) so that the
  errors stay measured against the prediction itself. Until enough errors are known, it is at
  least the distance from the median to the slowest recent service time, and on a shared host
  at least the margin of the host's platforms that have enough errors at that level. Until a
  platform is calibrated (enough errors for the target's quantile), its margin is at least
  the largest of the calibrated platforms': a tail not known yet is not taken to be shorter
  than one that is (the twelfth pass: serverless's 0.99 margin ruled it out and the rule fell
  back on Docker, whose margin rested on a few errors, and Docker answered late).

Cost: per request, plus per GB-second of the platform's memory for the time it runs (Lambda),
plus the instance-hour apportioned to the request's share of the instance (its time on one of
the instance's slots).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from straightline_placer.algorithm import Platform
from straightline_placer.calibration import MIN_ERRORS, errors_for
from straightline_placer.policy import PlatformSettings
from straightline_placer.registry import Instance, InstanceStats, PlatformState


@dataclass(frozen=True, slots=True)
class Objective:
    """The request's latency objective, the share of requests to meet it for, and what the
    recollection of figures found too slow for it needs: the model's request rate and the
    time."""

    seconds: float
    rate_rps: float
    now: float
    attainment: float = 0.99


def predict_all(
    platforms: Mapping[Platform, PlatformState],
    size: int,
    settings: Mapping[Platform, PlatformSettings],
    objective: Objective,
) -> None:
    """Fills every platform's prediction for a request of `size` bytes."""
    running = _running_per_host(platforms, settings)
    calibrated_at = errors_for(objective.attainment)
    for platform, state in platforms.items():
        platform_settings = settings[platform]
        stretch = 1.0
        if platform_settings.host:
            stretch = max(1.0, (running[platform_settings.host] + 1) / platform_settings.host_cores)
        state.host = platform_settings.host
        state.load_level = (
            min(running[state.host], platform_settings.host_cores) if state.host else 0
        )
        predict(state, size, platform_settings, objective, stretch)
        state.errors_known = state.instance.prediction_errors.known(state.load_level)
        state.calibrated = state.errors_known >= calibrated_at
        state.spare_core = (
            bool(state.host)
            and state.free_slots > 0
            and running[state.host] < platform_settings.host_cores
            and _runs_ahead(state.instance) == 0
        )
    # A newcomer on a shared host is no surer than the platforms measured beside it on the
    # same cores; a platform whose tail is not known yet is no surer than those whose is.
    _borrow_margins(platforms, lends=_has_a_margin, group=lambda state: state.host)
    _borrow_margins(platforms, lends=_is_calibrated, group=lambda state: "every platform")


def _has_a_margin(state: PlatformState) -> bool:
    return state.errors_known >= MIN_ERRORS


def _is_calibrated(state: PlatformState) -> bool:
    return state.calibrated


def _borrow_margins(
    platforms: Mapping[Platform, PlatformState],
    lends: Callable[[PlatformState], bool],
    group: Callable[[PlatformState], str],
) -> None:
    """Every platform with a prediction that does not `lend` takes at least the largest margin
    of those of its `group` that do (`calibration.py`); a platform without a group (an empty
    one) neither lends nor borrows."""
    largest: dict[str, float] = {}
    borrowers: list[PlatformState] = []
    for state in platforms.values():
        if not group(state) or state.predicted_latency_s is None:
            continue
        if lends(state):
            largest[group(state)] = max(largest.get(group(state), state.margin_s), state.margin_s)
        else:
            borrowers.append(state)
    for state in borrowers:
        state.margin_s = max(state.margin_s, largest.get(group(state), state.margin_s))


def _running_per_host(
    platforms: Mapping[Platform, PlatformState], settings: Mapping[Platform, PlatformSettings]
) -> dict[str, int]:
    """Requests running on each named host: its platforms' busy slots."""
    running: dict[str, int] = {}
    for platform, state in platforms.items():
        host = settings[platform].host
        if host:
            running[host] = running.get(host, 0) + state.capacity_total - state.free_slots
    return running


def predict(
    state: PlatformState,
    size: int,
    settings: PlatformSettings,
    objective: Objective,
    stretch: float = 1.0,
) -> None:
    """Fills the state's predicted latency (None when it cannot take the request) and cost;
    `stretch` is how much slower than alone the host's shared cores make a request now."""
    if size > settings.max_request_bytes:
        state.predicted_latency_s = None
        return
    stats = _figures(state.instance, size, settings, objective)
    state.unmeasured = not stats.measured
    state.probing = state.unmeasured and state.busy
    service = stats.service_time_s(size) * stretch
    if state.free_slots > 0 and state.warm_free_slots > 0:
        wait = _runs_ahead(state.instance) * service / _runs_side_by_side(state.instance)
        cold = 0.0
    elif state.free_slots > 0:
        wait = 0.0
        cold = stats.recent_cold_start_s
    elif state.instance_queue_room > 0 and stats.measured:
        wait = (state.instance_queued + 1) * service / max(1, state.instance.capacity_total)
        cold = 0.0
    else:
        state.predicted_latency_s = None
        return
    state.predicted_latency_s = wait + service + _transfer_s(size, settings) + cold
    tail = stats.slowest_service_time_s(size) - service
    state.margin_s = state.instance.prediction_errors.margin_s(
        objective.attainment, tail, state.load_level
    )
    state.predicted_cost_usd = cost(service + cold, state.instance.capacity_total, settings)


def _runs_side_by_side(instance: Instance) -> int:
    """Requests the instance's environments run through the model at once."""
    per_environment = instance.stats.runs_per_environment
    if per_environment == 0:
        return max(1, instance.capacity_total)
    return max(1, instance.stats.warm_environments) * per_environment


def _runs_ahead(instance: Instance) -> int:
    """Requests that run before one sent to a free slot of the instance now starts: those
    running beyond what its environments run side by side, and the one that fills them."""
    running = instance.capacity_total - instance.effective_free
    ahead = running - _runs_side_by_side(instance) + 1
    return ahead if ahead > 0 else 0


def _figures(
    instance: Instance, size: int, settings: PlatformSettings, objective: Objective
) -> InstanceStats:
    """The instance's figures as it reports them, or, once its adapter has forgotten them,
    as the placer recalls them."""
    fresh, memory = instance.stats, instance.recollection
    rate, now = objective.rate_rps, objective.now
    if fresh.measured:
        memory.remember(fresh, _too_slow(fresh, size, settings, objective), rate, now)
        return fresh
    recalled = memory.stats
    if recalled is None:
        return fresh
    too_slow = _too_slow(recalled, size, settings, objective)
    return recalled if memory.recalls(too_slow, rate, now) else fresh


def _too_slow(
    stats: InstanceStats, size: int, settings: PlatformSettings, objective: Objective
) -> bool:
    """Whether the platform misses the objective even with a free, warm slot."""
    return stats.slowest_service_time_s(size) + _transfer_s(size, settings) > objective.seconds


def _transfer_s(size: int, settings: PlatformSettings) -> float:
    return settings.network_round_trip_s + size / settings.bandwidth_bytes_per_s


def cost(busy_s: float, slots: int, settings: PlatformSettings) -> float:
    """What a request that keeps one slot busy for `busy_s` costs on the platform."""
    return (
        settings.price_per_request
        + settings.price_per_gb_second * settings.memory_mb / 1024 * busy_s
        + settings.price_per_instance_hour / 3600 * busy_s / max(1, slots)
    )
