//! A vLLM-compatible model-server simulator. Each pod has a prefix cache with LRU eviction, a
//! continuous-batching engine, LoRA adapter slots, vLLM's metrics, and faults on demand; see
//! `sim/README.md` for the model and its calibration.
//!
//! In-process use (tests): start pods on free loopback ports, talk HTTP to them, drop the
//! handle to stop them.
//!
//! ```no_run
//! let sim = inference_sim::spawn_pods(inference_sim::PodConfig::default(), 2).unwrap();
//! for pod in sim.pods() {
//!     println!("pod {} at {}", pod.index(), pod.url());
//! }
//! ```

mod api;
pub mod config;
mod engine;
pub mod hf_tokenizer;
mod kv_cache;
pub mod kv_events;
mod lora;
mod metrics;
mod pod;
mod progress;
mod server;
mod timing;
pub mod tokenizer;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub use config::{FaultConfig, KvEventsEncoding, PodConfig};
pub use kv_events::KvEventsAddrs;

/// A running pod: where it listens, and a way to stop it.
#[derive(Clone)]
pub struct PodHandle {
    index: usize,
    addr: SocketAddr,
    kv_events: Option<KvEventsAddrs>,
    pod: Arc<pod::Pod>,
}

impl PodHandle {
    /// The pod's position in the group; responses carry it in `x-sim-pod`.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`, the base URL of the pod's API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the pod publishes its KV events, if it does (`kv_events_port`).
    pub fn kv_events(&self) -> Option<KvEventsAddrs> {
        self.kv_events
    }

    /// `tcp://host:port` of the KV-event PUB socket, for a ZeroMQ SUB socket.
    pub fn kv_events_endpoint(&self) -> Option<String> {
        self.kv_events
            .map(|addrs| format!("tcp://{}", addrs.publish))
    }

    /// `tcp://host:port` of the KV-event replay (ROUTER) socket.
    pub fn kv_events_replay_endpoint(&self) -> Option<String> {
        self.kv_events
            .map(|addrs| format!("tcp://{}", addrs.replay))
    }

    /// Stops serving: the listener closes and open connections drop.
    pub fn stop(&self) {
        self.pod.stop();
    }
}

/// The KV-event PUB and replay ports of pod `index` of `count`: `kv_events_port + index` and
/// `kv_events_replay_port + index`, the replay ports starting after the last PUB port unless
/// given. Port 0 gives every pod free ports.
fn kv_event_ports(config: &PodConfig, index: usize, count: usize) -> Option<(u16, u16)> {
    let base = config.kv_events_port?;
    if base == 0 {
        return Some((0, config.kv_events_replay_port.unwrap_or(0)));
    }
    let replay_base = config
        .kv_events_replay_port
        .map_or(usize::from(base) + count, usize::from);
    let port = |p: usize| u16::try_from(p).unwrap_or(0);
    Some((port(usize::from(base) + index), port(replay_base + index)))
}

/// Starts one pod per address (port 0 picks a free port) on the current tokio runtime.
pub async fn start_pods(config: PodConfig, addrs: &[SocketAddr]) -> io::Result<Vec<PodHandle>> {
    let config = Arc::new(config);
    let tokenizer = match &config.tokenizer {
        Some(path) => Some(Arc::new(
            hf_tokenizer::HfTokenizer::load(path)
                .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?,
        )),
        None => None,
    };
    let mut pods = Vec::with_capacity(addrs.len());
    for (index, addr) in addrs.iter().enumerate() {
        let kv_ports = kv_event_ports(&config, index, addrs.len());
        match pod::Pod::start(config.clone(), index, *addr, kv_ports, tokenizer.clone()).await {
            Ok((pod, addr, kv_events)) => pods.push(PodHandle {
                index,
                addr,
                kv_events,
                pod,
            }),
            Err(error) => {
                pods.iter().for_each(PodHandle::stop);
                return Err(io::Error::new(
                    error.kind(),
                    format!("pod {index} on {addr}: {error}"),
                ));
            }
        }
    }
    Ok(pods)
}

/// Pods running on a background thread of their own; dropping it stops them.
pub struct Simulator {
    pods: Vec<PodHandle>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts `count` pods on free loopback ports, on a thread of their own, so any test (async or
/// not) can use them.
pub fn spawn_pods(config: PodConfig, count: usize) -> io::Result<Simulator> {
    Simulator::start(
        config,
        &vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0)); count],
    )
}

impl Simulator {
    /// Starts one pod per address on a thread of their own.
    pub fn start(config: PodConfig, addrs: &[SocketAddr]) -> io::Result<Self> {
        let addrs = addrs.to_vec();
        let (ready, pods) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("inference-sim".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => return drop(ready.send(Err(error))),
                };
                runtime.block_on(async move {
                    let started = start_pods(config, &addrs).await;
                    let handles = started.as_ref().ok().cloned();
                    let _ = ready.send(started);
                    if let Some(handles) = handles {
                        let _ = stopped.await;
                        handles.iter().for_each(PodHandle::stop);
                    }
                });
            })?;
        let pods = pods
            .recv()
            .map_err(|_| io::Error::other("the simulator thread exited before starting"))??;
        Ok(Self {
            pods,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn pods(&self) -> &[PodHandle] {
        &self.pods
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.pods.iter().map(PodHandle::addr).collect()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
