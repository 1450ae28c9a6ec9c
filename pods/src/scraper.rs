//! The scraper thread: one per module config (started with it, stopped when it goes away), with
//! its own single-threaded async runtime. Every member of the registry gets a scrape loop; loops
//! of removed pods are cancelled. A scrape never outlives its timeout, and a slow pod only
//! delays its own next scrape. Each loop keeps one HTTP/1.1 connection to its pod open between
//! scrapes ([`crate::http1`]) and reads the exposition line by line as it arrives
//! ([`exposition::SeriesReader`]), with buffers reused from one scrape to the next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::ScrapeConfig;
use crate::exposition::SeriesReader;
use crate::http1::{Connection, FetchError};
use crate::metric_names::MetricNames;
use crate::registry::{PodRegistry, PodState};

/// Totals over all pods, for the module's own metrics.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
}

/// Handle of the running scraper thread; dropping it stops the thread and waits for it.
pub struct Scraper {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<ScrapeStats>,
}

struct Settings {
    interval: Duration,
    timeout: Duration,
    path: String,
    names: MetricNames,
}

impl Scraper {
    /// Starts scraping the members of `registry`. Fails only if the config is invalid or the
    /// thread cannot be started.
    pub fn start(registry: Arc<PodRegistry>, config: &ScrapeConfig) -> Result<Scraper, String> {
        config.validate().map_err(|e| e.to_string())?;
        let settings = Settings {
            interval: Duration::from_millis(config.interval_ms),
            timeout: Duration::from_millis(config.timeout_ms),
            path: config.path.clone(),
            names: config.metric_names().expect("validated"),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the scraper runtime: {e}"))?;
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(ScrapeStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("inference-scheduler-scraper".into())
            .spawn(move || {
                runtime.block_on(supervise(
                    registry,
                    Arc::new(settings),
                    thread_stats,
                    stopped,
                ));
            })
            .map_err(|e| format!("cannot start the scraper thread: {e}"))?;
        Ok(Scraper {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> &Arc<ScrapeStats> {
        &self.stats
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps one scrape loop per member until told to stop.
async fn supervise(
    registry: Arc<PodRegistry>,
    settings: Arc<Settings>,
    stats: Arc<ScrapeStats>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut loops: HashMap<Box<str>, JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {}
        }
        let members = registry.all();
        loops.retain(|address, task| {
            let keep = members.contains_key(address);
            if !keep {
                task.abort();
            }
            keep
        });
        for (address, pod) in members.iter() {
            if !loops.contains_key(address) {
                let task = scrape_loop(Arc::clone(pod), Arc::clone(&settings), Arc::clone(&stats));
                loops.insert(address.clone(), tokio::spawn(task));
            }
        }
    }
    loops.values().for_each(JoinHandle::abort);
}

async fn scrape_loop(pod: Arc<PodState>, settings: Arc<Settings>, stats: Arc<ScrapeStats>) {
    // Pods are reached directly (no proxy), as the data plane reaches them.
    let mut connection = Connection::new(pod.address(), &settings.path);
    let mut reader = SeriesReader::new(&settings.names);
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result =
            tokio::time::timeout(settings.timeout, scrape(&mut connection, &mut reader)).await;
        match result {
            Ok(Ok(metrics)) => {
                pod.publish_metrics(metrics);
                stats.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(failure)) => {
                pod.record_failed_scrape(failure == Failure::Unreachable);
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_timeout) => {
                // The exchange stopped half-way: the connection is in an unknown state.
                connection.close();
                pod.record_failed_scrape(true);
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Why a scrape failed: no answer at all, or an answer we could not use.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Unreachable,
    Unusable,
}

async fn scrape(
    connection: &mut Connection,
    reader: &mut SeriesReader,
) -> Result<scheduler::PodMetrics, Failure> {
    let fetched = connection.fetch_lines(|line| reader.line(line)).await;
    // Always finish, so the reader starts the next scrape empty.
    let metrics = reader.finish(Instant::now());
    match fetched {
        Ok(()) => metrics.map_err(|_| Failure::Unusable),
        Err(FetchError::Unreachable(_)) => Err(Failure::Unreachable),
        Err(FetchError::Unusable(_)) => Err(Failure::Unusable),
    }
}
