//! Stand-in model-server backends for the Envoy tests: a small HTTP/1.1 server on a free
//! loopback port that answers with JSON naming itself, or with a Server-Sent-Events stream whose
//! second event waits until the test releases it (so a test can prove the first event arrived
//! before the stream ended, without timing assumptions).
//!
//! It speaks just enough HTTP/1.1 for Envoy's upstream connections: keep-alive, content-length
//! and chunked request bodies.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Releases the held-back part of SSE responses.
#[derive(Clone, Default)]
pub struct SseGate(Arc<(Mutex<bool>, Condvar)>);

impl SseGate {
    pub fn release(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    /// Waits until released, at most `limit`.
    fn wait(&self, limit: Duration) {
        let guard = self.0 .0.lock().unwrap();
        let _ = self
            .0
             .1
            .wait_timeout_while(guard, limit, |released| !*released)
            .unwrap();
    }
}

pub struct Backend {
    pub addr: String,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// What the backend's `GET /metrics` answers.
#[derive(Default)]
struct Metrics {
    text: Mutex<String>,
    /// When set, `/metrics` requests are held without an answer (a hung pod).
    hang: AtomicBool,
    scrapes: AtomicUsize,
}

impl Backend {
    /// Starts a backend; SSE responses wait on `gate` before their last event.
    pub fn start(gate: SseGate) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let (name, count, stopped, text) = (
            addr.clone(),
            Arc::clone(&served),
            Arc::clone(&stop),
            Arc::clone(&metrics),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (name, count, gate, text) = (
                    name.clone(),
                    Arc::clone(&count),
                    gate.clone(),
                    Arc::clone(&text),
                );
                std::thread::spawn(move || serve(conn, &name, &count, &gate, &text));
            }
        });
        Backend {
            addr,
            served,
            stop,
            metrics,
        }
    }

    /// Sets the Prometheus text `GET /metrics` answers.
    pub fn set_metrics(&self, text: &str) {
        *self.metrics.text.lock().unwrap() = text.to_owned();
    }

    /// Makes `GET /metrics` hang (true) or answer again (false).
    pub fn hang_metrics(&self, hang: bool) {
        self.metrics.hang.store(hang, Ordering::SeqCst);
    }

    /// `GET /metrics` requests received.
    pub fn scrapes(&self) -> usize {
        self.metrics.scrapes.load(Ordering::SeqCst)
    }

    /// Requests this backend answered.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr); // wake the accept loop
    }
}

/// An address on which nothing listens: connections are refused.
pub fn refused_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve(conn: TcpStream, name: &str, served: &AtomicUsize, gate: &SseGate, metrics: &Metrics) {
    // Small writes must leave at once: with Nagle, a response's tail waits for a delayed ACK.
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    while let Some(req) = read_request(&mut reader) {
        if req.method == "GET" && req.path == "/metrics" {
            metrics.scrapes.fetch_add(1, Ordering::SeqCst);
            if metrics.hang.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            let text = metrics.text.lock().unwrap().clone();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        served.fetch_add(1, Ordering::SeqCst);
        let wants_stream = serde_json::from_slice::<serde_json::Value>(&req.body)
            .is_ok_and(|v| v["stream"] == true);
        let ok = if wants_stream {
            write_sse(&mut writer, name, gate)
        } else {
            write_json(&mut writer, name, &req)
        };
        if ok.is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        req.body.resize(len, 0);
        reader.read_exact(&mut req.body).ok()?;
    } else if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            let start = req.body.len();
            req.body.resize(start + size, 0);
            reader.read_exact(&mut req.body[start..]).ok()?;
            line.clear();
            reader.read_line(&mut line).ok()?;
            if size == 0 {
                break;
            }
        }
    }
    Some(req)
}

fn write_json(w: &mut TcpStream, name: &str, req: &Request) -> std::io::Result<()> {
    let body = serde_json::json!({
        "backend": name,
        "method": req.method,
        "path": req.path,
        "destination": req.header("x-gateway-destination-endpoint"),
        "body_len": req.body.len(),
        "body_sha": fnv(&req.body),
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-backend: {name}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    w.write_all(response.as_bytes())?;
    w.flush()
}

fn write_sse(w: &mut TcpStream, name: &str, gate: &SseGate) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-backend: {name}\r\ntransfer-encoding: chunked\r\n\r\n"
    )?;
    write_chunk(w, b"data: {\"first\":true}\n\n")?;
    gate.wait(Duration::from_secs(15));
    write_chunk(w, b"data: [DONE]\n\n")?;
    write!(w, "0\r\n\r\n")?;
    w.flush()
}

fn write_chunk(w: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    w.write_all(&chunk)?;
    w.flush()
}

/// A fingerprint of the body, so tests can check it arrived unchanged.
pub fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}
