//! Per-route request rate, error rate and p99 over the last minute, for the status page.
//!
//! They come from what the request path counts anyway (`edgegate_requests_total` and
//! `edgegate_request_duration_seconds`): the admin side reads those every few seconds
//! and takes the difference between now and a reading about a minute old, the way
//! Prometheus' `rate()` and `histogram_quantile()` would. Serving a request does no
//! extra work for the page, and nothing here runs unless the admin listener does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::telemetry::metrics::Metrics;

/// How far back the rates look.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How often the status page's sampler takes a reading; a `/status` request also takes one.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// What one route has counted since its series were created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTotals {
    pub requests: u64,
    /// Responses with a 5xx status.
    pub errors: u64,
    /// Cumulative counts of the duration histogram by upper bound (`+Inf` left out).
    pub buckets: Vec<(f64, u64)>,
    /// Observations of the duration histogram, `+Inf` bucket included.
    pub observed: u64,
}

/// The totals of every route at one moment.
#[derive(Debug, Clone)]
pub struct Reading {
    pub at: Instant,
    pub routes: HashMap<String, RouteTotals>,
}

impl Reading {
    /// Reads the request counters; requests that matched no route (label `""`) are left
    /// out, they belong to no route on the page.
    pub fn take(metrics: &Metrics, at: Instant) -> Self {
        let mut routes: HashMap<String, RouteTotals> = HashMap::new();
        for family in prometheus::core::Collector::collect(&metrics.requests) {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|p| p.name() == name)
                        .map_or("", |p| p.value())
                };
                let route = label("route");
                if route.is_empty() {
                    continue;
                }
                let count = metric.get_counter().get_value() as u64;
                let totals = routes.entry(route.to_string()).or_default();
                totals.requests += count;
                if label("code").starts_with('5') {
                    totals.errors += count;
                }
            }
        }
        for family in prometheus::core::Collector::collect(&metrics.request_duration) {
            for metric in family.get_metric() {
                let Some(route) = metric
                    .get_label()
                    .iter()
                    .find(|p| p.name() == "route")
                    .map(|p| p.value())
                    .filter(|r| !r.is_empty())
                else {
                    continue;
                };
                let histogram = metric.get_histogram();
                let totals = routes.entry(route.to_string()).or_default();
                totals.observed = histogram.get_sample_count();
                totals.buckets = histogram
                    .get_bucket()
                    .iter()
                    .filter(|b| b.upper_bound().is_finite())
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect();
            }
        }
        Self { at, routes }
    }
}

/// One route's traffic between two readings.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRates {
    /// Length of the window the numbers cover, in seconds.
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    /// Share of the requests answered with a 5xx; `None` without requests.
    pub error_ratio: Option<f64>,
    /// `None` without requests.
    pub p99_seconds: Option<f64>,
}

/// A counter's increase; a smaller value means the series was removed and created again
/// (a route renamed away and back), so all of it is new.
fn increase(from: u64, to: u64) -> u64 {
    if to >= from {
        to - from
    } else {
        to
    }
}

/// The traffic of a route between `from` (absent: the route is newer) and `to`.
pub fn rates(from: Option<&RouteTotals>, to: &RouteTotals, seconds: f64) -> RouteRates {
    let zero = RouteTotals::default();
    let from = from.unwrap_or(&zero);
    let reset = to.requests < from.requests || to.observed < from.observed;
    let from = if reset { &zero } else { from };
    let requests = increase(from.requests, to.requests);
    let errors = increase(from.errors, to.errors).min(requests);
    let buckets: Vec<(f64, u64)> = to
        .buckets
        .iter()
        .map(|&(bound, count)| {
            let before = from
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0, |(_, c)| *c);
            (bound, increase(before, count))
        })
        .collect();
    let observed = increase(from.observed, to.observed);
    RouteRates {
        seconds,
        requests,
        errors,
        requests_per_second: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        error_ratio: (requests > 0).then(|| errors as f64 / requests as f64),
        p99_seconds: quantile(0.99, &buckets, observed),
    }
}

/// The `q` quantile of a histogram given as cumulative counts by upper bound, with
/// `total` observations: linear inside the bucket it falls in, as Prometheus'
/// `histogram_quantile` does; past the last finite bound, that bound.
pub fn quantile(q: f64, buckets: &[(f64, u64)], total: u64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            let inside = count.saturating_sub(below);
            if inside == 0 {
                return Some(bound);
            }
            return Some(lower + (bound - lower) * (rank - below as f64) / inside as f64);
        }
        (lower, below) = (bound, count);
    }
    buckets.last().map(|&(bound, _)| bound)
}

/// Readings of the last minute, oldest first.
#[derive(Debug, Default)]
pub struct Sampler {
    history: Mutex<VecDeque<Arc<Reading>>>,
}

impl Sampler {
    /// Keeps `reading` when the newest kept one is at least `INTERVAL` older (so the
    /// history holds about a dozen readings, whatever the page's refresh rate), and
    /// forgets those that left the window.
    pub fn keep(&self, reading: Reading) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let spaced = history.back().is_none_or(|last| {
            reading.at.saturating_duration_since(last.at) + Duration::from_millis(250) >= INTERVAL
        });
        let now = reading.at;
        if spaced {
            history.push_back(Arc::new(reading));
        }
        while history
            .front()
            .is_some_and(|first| now.saturating_duration_since(first.at) > WINDOW)
        {
            history.pop_front();
        }
    }

    /// The oldest reading inside the window: what a reading taken now is compared with.
    pub fn baseline(&self) -> Option<Arc<Reading>> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.front().cloned()
    }

    /// Rates of every route in `now` against the window's oldest reading, which is kept
    /// first when the history is empty (no rates can be had from a single reading).
    pub fn rates(&self, now: Reading) -> HashMap<String, RouteRates> {
        let baseline = self.baseline();
        let result = match &baseline {
            Some(base) => {
                let seconds = now.at.saturating_duration_since(base.at).as_secs_f64();
                now.routes
                    .iter()
                    .map(|(route, totals)| {
                        (
                            route.clone(),
                            rates(base.routes.get(route), totals, seconds),
                        )
                    })
                    .collect()
            }
            None => HashMap::new(),
        };
        self.keep(now);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, errors: u64, buckets: &[(f64, u64)]) -> RouteTotals {
        RouteTotals {
            requests,
            errors,
            buckets: buckets.to_vec(),
            observed: buckets.last().map_or(0, |b| b.1),
        }
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        // 100 observations: 50 up to 0.1 s, 50 more up to 0.5 s.
        let buckets = [(0.1, 50), (0.5, 100), (1.0, 100)];
        let p99 = quantile(0.99, &buckets, 100).expect("p99");
        assert!((p99 - (0.1 + 0.4 * 49.0 / 50.0)).abs() < 1e-9, "{p99}");
        let p50 = quantile(0.5, &buckets, 100).expect("p50");
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(0.99, &buckets, 0), None);
    }

    #[test]
    fn quantile_past_the_last_bound_is_that_bound() {
        // 10 observations, only 5 of them within the finite buckets.
        assert_eq!(quantile(0.99, &[(1.0, 2), (30.0, 5)], 10), Some(30.0));
        assert_eq!(quantile(0.99, &[], 3), None);
    }

    #[test]
    fn rates_are_increases_over_the_window() {
        let from = totals(100, 10, &[(0.1, 100), (1.0, 100)]);
        let to = totals(160, 25, &[(0.1, 130), (1.0, 160)]);
        let r = rates(Some(&from), &to, 30.0);
        assert_eq!((r.requests, r.errors), (60, 15));
        assert!((r.requests_per_second - 2.0).abs() < 1e-9);
        assert_eq!(r.error_ratio, Some(0.25));
        // 30 of 60 within 0.1 s, the rest up to 1 s: p99 is near 1 s.
        let p99 = r.p99_seconds.expect("p99");
        assert!(p99 > 0.9 && p99 <= 1.0, "{p99}");
    }

    #[test]
    fn an_idle_route_has_no_ratio_and_no_p99() {
        let same = totals(5, 1, &[(0.1, 5)]);
        let r = rates(Some(&same), &same, 60.0);
        assert_eq!((r.requests, r.requests_per_second), (0, 0.0));
        assert_eq!((r.error_ratio, r.p99_seconds), (None, None));
    }

    #[test]
    fn a_recreated_series_counts_from_zero() {
        let from = totals(500, 50, &[(0.1, 500)]);
        let to = totals(8, 2, &[(0.1, 8)]);
        let r = rates(Some(&from), &to, 10.0);
        assert_eq!((r.requests, r.errors), (8, 2));
        let new_route = rates(None, &to, 10.0);
        assert_eq!(new_route.requests, 8);
    }

    fn reading(at: Instant, requests: u64) -> Reading {
        Reading {
            at,
            routes: [("r".to_string(), totals(requests, 0, &[(0.1, requests)]))].into(),
        }
    }

    /// Issue 23: the first reading was taken by the sampler task, which could run after
    /// the first requests were served, so they were never counted.
    #[test]
    fn an_empty_reading_at_start_counts_every_request_since() {
        let start = Instant::now();
        let sampler = Sampler::default();
        sampler.keep(Reading {
            at: start,
            routes: HashMap::new(),
        });
        let rates = sampler.rates(reading(start + Duration::from_secs(2), 6));
        assert_eq!(rates["r"].requests, 6);
        assert!((rates["r"].requests_per_second - 3.0).abs() < 1e-9);
    }

    #[test]
    fn the_history_spans_one_window_at_interval_spacing() {
        let start = Instant::now();
        let sampler = Sampler::default();
        assert!(sampler.rates(reading(start, 0)).is_empty());
        // A page refreshing every second adds a reading only every INTERVAL.
        for second in 1..=200u64 {
            let at = start + Duration::from_secs(second);
            let rates = sampler.rates(reading(at, second * 3));
            let base = sampler.baseline().expect("baseline");
            assert!(at.duration_since(base.at) <= WINDOW + INTERVAL);
            let r = &rates["r"];
            assert!(
                (r.requests_per_second - 3.0).abs() < 1e-9,
                "{second}: {r:?}"
            );
        }
        let kept = sampler.history.lock().expect("history").len() as u64;
        assert!(kept <= WINDOW.as_secs() / INTERVAL.as_secs() + 1, "{kept}");
    }
}
