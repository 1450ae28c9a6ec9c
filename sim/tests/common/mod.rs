//! A minimal HTTP/1.1 client over a real socket for the simulator's integration tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
pub use inference_sim::{PodConfig, Simulator};
use tokio::net::TcpStream;

pub const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// Pods 20x faster than the modelled GPU, so tests stay quick.
pub fn fast_config() -> PodConfig {
    PodConfig {
        time_scale: 0.05,
        ..PodConfig::default()
    }
}

pub fn start(config: PodConfig, pods: usize) -> Simulator {
    inference_sim::spawn_pods(config, pods).expect("pods start")
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn pod(&self) -> String {
        self.headers["x-sim-pod"].to_str().unwrap().to_owned()
    }
}

pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Response<Incoming>, hyper::Error> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .unwrap();
    sender.send_request(request).await
}

pub async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Answer {
    let response = send(addr, method, path, body).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, "GET", path, None).await
}

pub async fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Answer {
    call(addr, "POST", path, Some(&body.to_string())).await
}

/// A streamed response: the SSE `data:` payloads and when the first one arrived.
pub struct Streamed {
    pub status: StatusCode,
    pub events: Vec<String>,
    pub ttft: Duration,
}

pub async fn stream(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Streamed {
    let start = Instant::now();
    let response = send(addr, "POST", path, Some(&body.to_string()))
        .await
        .expect("response");
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let mut body = response.into_body();
    let mut text = String::new();
    let mut ttft = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("stream frame");
        if let Some(data) = frame.data_ref() {
            ttft.get_or_insert_with(|| start.elapsed());
            text.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    let events = text
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not SSE data: {event:?}"))
                .to_owned()
        })
        .collect();
    Streamed {
        status,
        events,
        ttft: ttft.unwrap_or_default(),
    }
}

/// The value of the first sample whose line starts with `prefix` in Prometheus text.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A prompt of about `words` distinct words.
pub fn prompt(seed: usize, words: usize) -> String {
    (0..words).map(|i| format!("w{seed}x{i} ")).collect()
}
