//! How loaded a pod is right now: the one load model the queue scorer, the hot-spot guard and
//! the caller's saturation rule share.
//!
//! A scrape is up to one interval old (50 ms by default), and in a burst hundreds of requests
//! can be routed inside that window. The estimate starts from the scrape and replays what the
//! gateway itself did since: requests it routed join the pod, requests it saw finish leave it.
//! Of the pod's requests, as many as its batch holds are running (continuous batching serves
//! them now) and only the rest wait. Every scrape resets the since-counters, so the estimate
//! falls back to the scraped truth each interval and errors never accumulate.

use crate::pod::PodView;

/// A pod's estimated requests waiting for a batch slot and running in the batch, and the share
/// of its KV cache they use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadEstimate {
    pub waiting: u32,
    pub running: u32,
    /// KV-cache use, 0 to 1: the scraped use scaled by the running requests now against those
    /// at the scrape (each running request holds about the same share). `None` without
    /// metrics; the scraped value when nothing ran at the scrape (no share to scale by).
    pub kv_usage: Option<f64>,
}

impl LoadEstimate {
    /// The estimate for `pod`, from its metrics as given (a filter may have set stale ones aside)
    /// and the gateway's own counts.
    ///
    /// * With metrics: the pod holds `waiting + running + routed − finished` (routed and finished
    ///   by this gateway since the scrape). Its batch capacity is the running count when the
    ///   scrape showed a queue (the batch was full at that size), else the largest batch seen
    ///   full before ([`PodView::batch_capacity`]), else unbounded: a pod that had room at the
    ///   scrape and never showed a queue runs what it gets.
    /// * Without metrics (not scraped yet, or stale): the requests this gateway has in flight
    ///   there, split by the known capacity if any; with none known they all count as waiting,
    ///   the cautious reading of a pod we know nothing else about.
    /// * A pod whose latest scrape failed gets no credit: its batch is taken as full at the last
    ///   scraped size and nothing as finished, so what was routed there since waits. (Requests a
    ///   dying pod fails at once would otherwise make it look idle and draw traffic to it.)
    pub fn of(pod: &PodView<'_>) -> Self {
        let (total, capacity) = match pod.metrics {
            Some(m) => {
                let finished = if pod.scrape_failing {
                    0
                } else {
                    pod.finished_since_scrape
                };
                let total = m
                    .waiting
                    .saturating_add(m.running)
                    .saturating_add(pod.routed_since_scrape)
                    .saturating_sub(finished);
                let capacity = if m.waiting > 0 || pod.scrape_failing {
                    Some(m.running)
                } else {
                    pod.batch_capacity.map(|c| c.max(m.running))
                };
                (total, capacity.unwrap_or(u32::MAX))
            }
            None => (pod.in_flight, pod.batch_capacity.unwrap_or(0)),
        };
        let running = total.min(capacity);
        let kv_usage = pod.metrics.map(|m| {
            let scraped = if m.kv_usage.is_finite() {
                m.kv_usage.clamp(0.0, 1.0)
            } else {
                1.0
            };
            if m.running > 0 {
                (scraped * f64::from(running) / f64::from(m.running)).min(1.0)
            } else {
                scraped
            }
        });
        LoadEstimate {
            waiting: total - running,
            running,
            kv_usage,
        }
    }

    /// Requests the pod holds, waiting or running.
    pub fn total(&self) -> u32 {
        self.waiting.saturating_add(self.running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::PodMetrics;

    fn scraped(waiting: u32, running: u32) -> PodMetrics {
        PodMetrics {
            waiting,
            running,
            ..PodMetrics::idle()
        }
    }

    fn est(pod: PodView<'_>) -> (u32, u32) {
        let e = LoadEstimate::of(&pod);
        (e.waiting, e.running)
    }

    #[test]
    fn a_burst_into_a_pod_with_room_runs_it_does_not_queue_it() {
        // The bug this replaces: 5 requests routed inside one scrape window to a pod with 256
        // free slots counted as 5 waiting, so every pod looked saturated.
        let idle = scraped(0, 0);
        let pod = PodView {
            metrics: Some(&idle),
            routed_since_scrape: 5,
            in_flight: 5,
            ..PodView::new("a")
        };
        assert_eq!(est(pod), (0, 5));
        let known = PodView {
            batch_capacity: Some(256),
            ..pod
        };
        assert_eq!(est(known), (0, 5));
    }

    #[test]
    fn a_burst_past_the_batch_capacity_queues_the_excess() {
        // The pod showed a queue with 4 running: its batch holds 4.
        let full = scraped(1, 4);
        let pod = PodView {
            metrics: Some(&full),
            routed_since_scrape: 3,
            ..PodView::new("a")
        };
        assert_eq!(est(pod), (4, 4));
        // No queue at this scrape, but it was seen full at 4 before: 2 running + 5 routed.
        let partly = scraped(0, 2);
        let pod = PodView {
            metrics: Some(&partly),
            routed_since_scrape: 5,
            batch_capacity: Some(4),
            ..PodView::new("a")
        };
        assert_eq!(est(pod), (3, 4));
    }

    #[test]
    fn finished_requests_free_slots_for_the_queue() {
        let full = scraped(3, 4);
        let pod = PodView {
            metrics: Some(&full),
            finished_since_scrape: 2,
            ..PodView::new("a")
        };
        assert_eq!(est(pod), (1, 4), "two finished: two of the waiting now run");
        let drained = PodView {
            finished_since_scrape: 9,
            ..pod
        };
        assert_eq!(est(drained), (0, 0), "never below zero");
    }

    #[test]
    fn converges_to_the_scrape_when_the_counters_reset() {
        let m = scraped(2, 7);
        assert_eq!(
            est(PodView {
                metrics: Some(&m),
                in_flight: 30,
                batch_capacity: Some(7),
                ..PodView::new("a")
            }),
            (2, 7),
            "in flight (possibly via other routes) does not add to a fresh scrape"
        );
    }

    #[test]
    fn a_pod_whose_scrape_fails_gets_no_credit() {
        let last = scraped(0, 2);
        let failing = PodView {
            metrics: Some(&last),
            routed_since_scrape: 6,
            finished_since_scrape: 6,
            scrape_failing: true,
            ..PodView::new("a")
        };
        assert_eq!(est(failing), (6, 2), "fast failures are not service");
    }

    #[test]
    fn kv_use_follows_the_running_requests() {
        // A burst of 8 into a pod running 4 at 20 % of its cache: between scrapes the next
        // request must see it fuller than an untouched pod at 25 % (no herding on a stale gauge).
        let m = PodMetrics {
            kv_usage: 0.2,
            ..scraped(0, 4)
        };
        let pod = PodView {
            metrics: Some(&m),
            routed_since_scrape: 8,
            ..PodView::new("a")
        };
        let kv = LoadEstimate::of(&pod).kv_usage.unwrap();
        assert!((kv - 0.6).abs() < 1e-9, "{kv}");
        let done = PodView {
            finished_since_scrape: 2,
            routed_since_scrape: 0,
            ..pod
        };
        assert!((LoadEstimate::of(&done).kv_usage.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(LoadEstimate::of(&PodView::new("b")).kv_usage, None);
        let nan = PodMetrics {
            kv_usage: f64::NAN,
            ..scraped(0, 0)
        };
        let pod = PodView {
            metrics: Some(&nan),
            ..PodView::new("c")
        };
        assert_eq!(
            LoadEstimate::of(&pod).kv_usage,
            Some(1.0),
            "unreadable is full"
        );
    }

    #[test]
    fn idle_pods_are_idle() {
        let idle = scraped(0, 0);
        assert_eq!(
            est(PodView {
                metrics: Some(&idle),
                ..PodView::new("a")
            }),
            (0, 0)
        );
        assert_eq!(est(PodView::new("unknown")), (0, 0));
    }

    #[test]
    fn pods_without_metrics_are_judged_on_what_is_in_flight() {
        let unknown = PodView {
            in_flight: 6,
            ..PodView::new("a")
        };
        assert_eq!(
            est(unknown),
            (6, 0),
            "no capacity known: all of it may wait"
        );
        let sized = PodView {
            batch_capacity: Some(4),
            ..unknown
        };
        assert_eq!(est(sized), (2, 4));
    }
}
