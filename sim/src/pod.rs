//! One simulated pod: its engine task, its listener, and the state its HTTP handlers share.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{FaultConfig, PodConfig};
use crate::engine::{Command, Engine, Request};
use crate::hf_tokenizer::HfTokenizer;
use crate::kv_events::{self, KvEventsAddrs};
use crate::metrics::Metrics;
use crate::server;

pub struct Pod {
    pub index: usize,
    pub config: Arc<PodConfig>,
    /// `--tokenizer`, shared by all pods of the process.
    pub tokenizer: Option<Arc<HfTokenizer>>,
    commands: mpsc::UnboundedSender<Command>,
    metrics: RwLock<Arc<Metrics>>,
    faults: Mutex<FaultConfig>,
    next_request: AtomicU64,
    /// Becomes true when the pod stops serving (shutdown or the `die` fault).
    stopped: watch::Sender<bool>,
}

impl Pod {
    /// Binds `addr` (and, with `kv_event_ports`, the KV-event PUB and replay ports on the same
    /// host), starts the engine and the server on the current tokio runtime.
    pub async fn start(
        config: Arc<PodConfig>,
        index: usize,
        addr: SocketAddr,
        kv_event_ports: Option<(u16, u16)>,
        tokenizer: Option<Arc<HfTokenizer>>,
    ) -> io::Result<(Arc<Pod>, SocketAddr, Option<KvEventsAddrs>)> {
        config
            .validate()
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let stopped = watch::channel(false).0;
        let (events, event_addrs) = match kv_event_ports {
            Some((publish, replay)) => {
                let started = kv_events::start(
                    config.clone(),
                    index,
                    stopped.subscribe(),
                    addr.ip(),
                    publish,
                    replay,
                )
                .await?;
                (Some(started.0), Some(started.1))
            }
            None => (None, None),
        };
        let metrics = Arc::new(Metrics::new(&config));
        let (commands, inbox) = mpsc::unbounded_channel();
        tokio::spawn(Engine::new(config.clone(), metrics.clone(), events).run(inbox));
        let pod = Arc::new(Pod {
            index,
            faults: Mutex::new(config.faults.clone()),
            config,
            tokenizer,
            commands,
            metrics: RwLock::new(metrics),
            next_request: AtomicU64::new(0),
            stopped,
        });
        tokio::spawn(server::serve(pod.clone(), listener));
        Ok((pod, bound, event_addrs))
    }

    /// Hands a request to the engine. False if the engine has stopped.
    pub fn submit(&self, request: Request) -> bool {
        self.commands.send(Command::Submit(request)).is_ok()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn faults(&self) -> FaultConfig {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        let die = faults.die;
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
        if die {
            self.stop();
        }
    }

    /// Aborts everything in flight and starts from a cold cache and fresh counters.
    pub async fn reset(&self) {
        let metrics = Arc::new(Metrics::new(&self.config));
        let (done, finished) = oneshot::channel();
        if self
            .commands
            .send(Command::Reset {
                metrics: metrics.clone(),
                done,
            })
            .is_ok()
        {
            let _ = finished.await;
        }
        *self.metrics.write().unwrap_or_else(|e| e.into_inner()) = metrics;
    }

    /// A process-unique id for responses.
    pub fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    /// Resolves when the pod stops serving.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.subscribe();
        let _ = stopped.wait_for(|&stopped| stopped).await;
    }
}
