//! The scraper thread against real HTTP pods on loopback: fresh metrics, failures counted,
//! timeouts honoured, membership followed, and a clean stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::backend::refused_address;
use integration::{Backend, SseGate};
use pods::{PodRegistry, ScrapeConfig, Scraper};

fn vllm_text(waiting: u32, kv: f64) -> String {
    format!(
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"m\"}} {waiting}\n\
         vllm:num_requests_running{{model_name=\"m\"}} 2\nvllm:kv_cache_usage_perc{{model_name=\"m\"}} {kv}\n"
    )
}

fn config(interval_ms: u64, timeout_ms: u64) -> ScrapeConfig {
    ScrapeConfig {
        interval_ms,
        timeout_ms,
        ..ScrapeConfig::default()
    }
}

/// Polls `check` every 10 ms for up to 5 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn metrics_are_scraped_and_kept_fresh() {
    let pod = Backend::start(SseGate::default());
    pod.set_metrics(&vllm_text(3, 0.25));
    let registry = Arc::new(PodRegistry::new());
    registry.sync([pod.addr.as_str()]);
    let scraper = Scraper::start(Arc::clone(&registry), &config(20, 500)).unwrap();
    let state = registry.get(&pod.addr).unwrap();
    eventually("first scrape", || state.metrics().is_some());
    assert_eq!(state.metrics().as_ref().unwrap().waiting, 3);

    pod.set_metrics(&vllm_text(9, 0.75));
    eventually("the new value", || {
        state.metrics().as_ref().is_some_and(|m| m.waiting == 9)
    });
    assert!((state.metrics().as_ref().unwrap().kv_usage - 0.75).abs() < 1e-9);
    assert!(scraper.stats().succeeded.load(Ordering::Relaxed) >= 2);
}

#[test]
fn failing_pods_are_counted_and_keep_their_last_metrics() {
    let good = Backend::start(SseGate::default());
    good.set_metrics(&vllm_text(1, 0.1));
    let garbage = Backend::start(SseGate::default());
    garbage.set_metrics("<html>not metrics</html>");
    let refused = refused_address();
    let registry = Arc::new(PodRegistry::new());
    registry.sync([good.addr.as_str(), garbage.addr.as_str(), refused.as_str()]);
    let scraper = Scraper::start(Arc::clone(&registry), &config(20, 300)).unwrap();

    let good_state = registry.get(&good.addr).unwrap();
    eventually("good pod scraped", || good_state.metrics().is_some());
    for addr in [&garbage.addr, &refused] {
        let s = registry.get(addr).unwrap();
        eventually("failures counted", || s.failed_scrapes_in_a_row() >= 2);
        assert!(s.metrics().is_none());
    }
    // A pod that breaks after a good scrape keeps (aging) metrics.
    good.set_metrics("garbage");
    eventually("good pod now failing", || {
        good_state.failed_scrapes_in_a_row() >= 2
    });
    assert_eq!(good_state.metrics().as_ref().unwrap().waiting, 1);
    assert!(scraper.stats().failed.load(Ordering::Relaxed) >= 6);
}

#[test]
fn a_hung_pod_is_abandoned_at_the_timeout_and_does_not_slow_the_others() {
    let hung = Backend::start(SseGate::default());
    hung.hang_metrics(true);
    let fine = Backend::start(SseGate::default());
    fine.set_metrics(&vllm_text(0, 0.0));
    let registry = Arc::new(PodRegistry::new());
    registry.sync([hung.addr.as_str(), fine.addr.as_str()]);
    let scraper = Scraper::start(Arc::clone(&registry), &config(20, 200)).unwrap();
    let started = Instant::now();
    let hung_state = registry.get(&hung.addr).unwrap();
    eventually("two timed-out scrapes", || {
        hung_state.failed_scrapes_in_a_row() >= 2
    });
    // Two timeouts of 200 ms: well under a second, not the pod's 30 s hang.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let (fine_ok, _) = registry.get(&fine.addr).unwrap().scrape_counts();
    assert!(
        fine_ok >= 5,
        "the healthy pod was scraped only {fine_ok} times meanwhile"
    );
    // Stopping does not wait for the hung scrape either.
    let stopping = Instant::now();
    drop(scraper);
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        stopping.elapsed()
    );
}

#[test]
fn the_scraper_follows_membership() {
    let a = Backend::start(SseGate::default());
    let b = Backend::start(SseGate::default());
    a.set_metrics(&vllm_text(1, 0.0));
    b.set_metrics(&vllm_text(2, 0.0));
    let registry = Arc::new(PodRegistry::new());
    registry.sync([a.addr.as_str()]);
    let _scraper = Scraper::start(Arc::clone(&registry), &config(20, 300)).unwrap();
    eventually("a scraped", || a.scrapes() > 0);
    registry.sync([b.addr.as_str()]);
    eventually("b scraped after joining", || {
        registry.get(&b.addr).unwrap().metrics().is_some()
    });
    let a_scrapes = a.scrapes();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        a.scrapes() <= a_scrapes + 1,
        "a is still scraped after leaving the pool"
    );
}

#[test]
fn a_bad_config_names_the_field() {
    let registry = Arc::new(PodRegistry::new());
    let err = Scraper::start(
        registry,
        &ScrapeConfig {
            preset: "tgi".into(),
            ..ScrapeConfig::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.contains("`preset`"), "{err}");
}
