//! One persistent HTTP/1.1 connection to one pod, for its `GET /metrics`.
//!
//! A scrape is a few hundred lines of text every 50 ms, for hundreds of pods: a general HTTP
//! client (request and header maps, a pool, a connection task per pod, the whole body gathered
//! into one string) costs several times what the scrape itself needs. This exchange writes one
//! prebuilt request, parses the response head with `httparse`, decodes the body
//! (`Content-Length`, `chunked`, or until the server closes) and hands it to the caller line by
//! line as it arrives, reusing its buffers from one scrape to the next.
//!
//! The connection is kept alive between scrapes and reopened when the pod closes it (`Connection:
//! close`, HTTP/1.0, an idle timeout on the pod's side: a request on a reused connection that
//! gets no byte back is retried once on a new one), after any error and after a response we did
//! not read to its end.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lines longer than this are refused: exposition lines are short, and a pod must not make the
/// scraper buffer without bound.
const MAX_LINE: usize = 1 << 20;
/// What one read asks the socket for, at least.
const READ_CHUNK: usize = 16 * 1024;
/// Response header lines we look at, at most.
const MAX_HEADERS: usize = 64;

/// Why an exchange failed: no answer at all (`Unreachable`), or an answer we cannot use.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchError {
    Unreachable(String),
    Unusable(String),
}

pub struct Connection {
    address: String,
    request: Vec<u8>,
    stream: Option<TcpStream>,
    /// Bytes read from the socket; `input[pos..]` not yet consumed.
    input: Vec<u8>,
    pos: usize,
    /// Body bytes of a line not yet complete.
    line: Vec<u8>,
}

/// How the body of the response being read ends.
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// How an exchange failed.
enum Failed {
    /// Before any byte of the answer came back: on a reused connection, the pod most likely
    /// closed it while idle, and the request is safe to send again on a new one.
    BeforeAnswer(FetchError),
    /// After the answer began: never retried.
    InAnswer(FetchError),
}

use Failed::{BeforeAnswer as Stale, InAnswer};

impl Connection {
    /// A connection to `address` (`host:port`) for `GET path`; opened at the first fetch.
    pub fn new(address: &str, path: &str) -> Connection {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/plain\r\nUser-Agent: inference-scheduler\r\n\r\n"
        );
        Connection {
            address: address.to_owned(),
            request: request.into_bytes(),
            stream: None,
            input: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            line: Vec::new(),
        }
    }

    /// Forgets the connection (the next fetch opens a new one). Call it when a fetch was
    /// abandoned half-way, e.g. at a timeout.
    pub fn close(&mut self) {
        self.stream = None;
        self.input.clear();
        self.pos = 0;
        self.line.clear();
    }

    /// Whether a connection is open (for tests).
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Sends the request and passes each line of a 2xx response's body to `on_line` (without
    /// its `\n` or `\r\n`), in order, as the body arrives. An error from `on_line` stops the
    /// exchange and is returned as `Unusable`.
    pub async fn fetch_lines(
        &mut self,
        mut on_line: impl FnMut(&[u8]) -> Result<(), String> + Send,
    ) -> Result<(), FetchError> {
        let reused = self.stream.is_some();
        let result = match self.exchange(&mut on_line).await {
            Err(Stale(_)) if reused => {
                self.close();
                self.exchange(&mut on_line).await
            }
            other => other,
        };
        result.map_err(|(Stale(e) | InAnswer(e))| {
            self.close();
            e
        })
    }

    /// One request and response.
    async fn exchange(
        &mut self,
        on_line: &mut (dyn FnMut(&[u8]) -> Result<(), String> + Send),
    ) -> Result<(), Failed> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address)
                .await
                .map_err(|e| Stale(unreachable("connect", e)))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
            self.input.clear();
            self.pos = 0;
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream
            .write_all(&self.request)
            .await
            .map_err(|e| Stale(unreachable("send", e)))?;

        // The response head.
        let (status, framing, keep_alive) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.input[self.pos..]) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = read_head(&response)?;
                    self.pos += len;
                    break head;
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(fatal(unusable(format!("not an HTTP response: {e}")))),
            }
            let answered = self.pos < self.input.len();
            match self.read_more().await {
                Ok(0) if !answered => {
                    return Err(Stale(FetchError::Unreachable(
                        "connection closed before an answer".into(),
                    )))
                }
                Ok(0) => {
                    return Err(fatal(FetchError::Unreachable(
                        "connection closed in the response head".into(),
                    )))
                }
                Ok(_) => {}
                Err(e) if !answered => return Err(Stale(unreachable("receive", e))),
                Err(e) => return Err(fatal(unreachable("receive", e))),
            }
        };
        if !(200..300).contains(&status) {
            // Not worth reading a body we will not use; the connection goes with it.
            return Err(fatal(unusable(format!("HTTP status {status}"))));
        }
        let mut framing = match status {
            204 => Framing::Length(0),
            _ => framing,
        };

        self.line.clear();
        loop {
            let done = self.decode(&mut framing, on_line).map_err(fatal)?;
            if done {
                break;
            }
            match self.read_more().await {
                Ok(0) if matches!(framing, Framing::UntilClose) => {
                    self.stream = None;
                    break;
                }
                Ok(0) => {
                    return Err(fatal(FetchError::Unreachable(
                        "connection closed in the middle of the body".into(),
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(fatal(unreachable("receive", e))),
            }
        }
        if !self.line.is_empty() {
            let last = std::mem::take(&mut self.line);
            let result = on_line(strip_cr(&last));
            self.line = last;
            self.line.clear();
            result.map_err(|e| fatal(FetchError::Unusable(e)))?;
        }
        // Bytes after the response were never asked for: the connection is in an unknown state.
        if !keep_alive || self.pos < self.input.len() {
            self.close();
        } else {
            self.input.clear();
            self.pos = 0;
        }
        Ok(())
    }

    /// Reads what the socket has (at least one byte, or 0 at its end) after the unconsumed
    /// input, moving that to the front first so the buffer does not grow.
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.input.copy_within(self.pos.., 0);
            self.input.truncate(self.input.len() - self.pos);
            self.pos = 0;
        }
        self.input.reserve(READ_CHUNK);
        let stream = self.stream.as_mut().expect("connected");
        stream.read_buf(&mut self.input).await
    }

    /// Consumes what it can of the input as body bytes; true once the body is complete.
    fn decode(
        &mut self,
        framing: &mut Framing,
        on_line: &mut (dyn FnMut(&[u8]) -> Result<(), String> + Send),
    ) -> Result<bool, FetchError> {
        loop {
            let available = &self.input[self.pos..];
            match framing {
                Framing::Length(0) => return Ok(true),
                Framing::Length(left) => {
                    let take = available
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if take == 0 {
                        return Ok(false);
                    }
                    *left -= take as u64;
                    self.body(take, on_line)?;
                }
                Framing::UntilClose => {
                    if available.is_empty() {
                        return Ok(false);
                    }
                    self.body(available.len(), on_line)?;
                }
                Framing::Chunked(chunk) => match chunk {
                    Chunk::Size => match httparse::parse_chunk_size(available) {
                        Ok(httparse::Status::Complete((len, 0))) => {
                            self.pos += len;
                            *chunk = Chunk::Trailers;
                        }
                        Ok(httparse::Status::Complete((len, size))) => {
                            self.pos += len;
                            *chunk = Chunk::Data(size);
                        }
                        Ok(httparse::Status::Partial) if available.len() > 1024 => {
                            return Err(unusable("chunk size line too long"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(false),
                        Err(_) => return Err(unusable("invalid chunk size")),
                    },
                    Chunk::Data(left) => {
                        let take = available
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        if take == 0 {
                            return Ok(false);
                        }
                        *left -= take as u64;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        self.body(take, on_line)?;
                    }
                    Chunk::DataEnd => {
                        if available.len() < 2 {
                            return Ok(false);
                        }
                        if &available[..2] != b"\r\n" {
                            return Err(unusable("chunk data not followed by CRLF"));
                        }
                        self.pos += 2;
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => match memchr::memmem::find(available, b"\r\n") {
                        Some(0) => {
                            self.pos += 2;
                            return Ok(true);
                        }
                        Some(end) => self.pos += end + 2, // a trailer field: ignored
                        None if available.len() > MAX_LINE => {
                            return Err(unusable("trailer line too long"))
                        }
                        None => return Ok(false),
                    },
                },
            }
        }
    }

    /// Consumes `len` body bytes from the input: complete lines go to `on_line` straight from
    /// the input; a line cut by the end of what arrived waits in `self.line`.
    fn body(
        &mut self,
        len: usize,
        on_line: &mut (dyn FnMut(&[u8]) -> Result<(), String> + Send),
    ) -> Result<(), FetchError> {
        let mut bytes = &self.input[self.pos..self.pos + len];
        self.pos += len;
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            let result = if self.line.is_empty() {
                on_line(strip_cr(&bytes[..end]))
            } else {
                self.line.extend_from_slice(&bytes[..end]);
                let result = on_line(strip_cr(&self.line));
                self.line.clear();
                result
            };
            result.map_err(FetchError::Unusable)?;
            bytes = &bytes[end + 1..];
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(unusable("a line of the body is longer than 1 MiB"));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }
}

/// Status, body framing and whether the connection stays open, from a parsed response head.
fn read_head(response: &httparse::Response<'_, '_>) -> Result<(u16, Framing, bool), Failed> {
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let mut framing = Framing::UntilClose;
    let mut length = None;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // `chunked` is the last coding when present; other codings we do not decode.
            let value = std::str::from_utf8(header.value).unwrap_or("");
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if last.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked(Chunk::Size);
            } else {
                return Err(fatal(unusable(format!(
                    "unsupported transfer-encoding `{value}`"
                ))));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).unwrap_or("").trim();
            let parsed: u64 = value
                .parse()
                .map_err(|_| fatal(unusable(format!("invalid content-length `{value}`"))))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(fatal(unusable("conflicting content-length headers")));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("connection") {
            let value = std::str::from_utf8(header.value).unwrap_or("");
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-encoding") {
            let value = std::str::from_utf8(header.value).unwrap_or("").trim();
            if !value.eq_ignore_ascii_case("identity") {
                return Err(fatal(unusable(format!(
                    "unsupported content-encoding `{value}`"
                ))));
            }
        }
    }
    // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3).
    if let (Framing::UntilClose, Some(length)) = (&framing, length) {
        framing = Framing::Length(length);
    }
    if matches!(framing, Framing::UntilClose) {
        keep_alive = false;
    }
    Ok((status, framing, keep_alive))
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn fatal(e: FetchError) -> Failed {
    InAnswer(e)
}

fn unreachable(what: &str, e: io::Error) -> FetchError {
    FetchError::Unreachable(format!("{what}: {e}"))
}

fn unusable(message: impl Into<String>) -> FetchError {
    FetchError::Unusable(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A real loopback server playing a script: for each connection it accepts, the responses
    /// to send, one per request read, each written in the given pieces with a pause between
    /// (so the client sees partial reads); the connection is closed after its last response.
    fn serve(script: Vec<Vec<Vec<&'static [u8]>>>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for responses in script {
                let (mut conn, _) = listener.accept().unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                for pieces in responses {
                    let mut request = Vec::new();
                    let mut byte = [0u8; 1];
                    while !request.ends_with(b"\r\n\r\n") {
                        if conn.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        request.push(byte[0]);
                    }
                    assert!(request.starts_with(b"GET /metrics HTTP/1.1\r\nHost: "));
                    for piece in pieces {
                        conn.write_all(piece).unwrap();
                        conn.flush().unwrap();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        });
        (addr, accepted)
    }

    async fn fetch(connection: &mut Connection) -> Result<Vec<String>, FetchError> {
        let mut lines = Vec::new();
        connection
            .fetch_lines(|line| {
                lines.push(String::from_utf8(line.to_vec()).unwrap());
                Ok(())
            })
            .await
            .map(|()| lines)
    }

    const LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\na 1\nb 2\r\nc 3";

    #[tokio::test]
    async fn a_content_length_body_arrives_in_lines_over_one_kept_connection() {
        let (addr, accepted) = serve(vec![vec![vec![LENGTH], vec![&LENGTH[..30], &LENGTH[30..]]]]);
        let mut connection = Connection::new(&addr, "/metrics");
        assert_eq!(fetch(&mut connection).await.unwrap(), ["a 1", "b 2", "c 3"]);
        assert!(connection.is_open());
        assert_eq!(fetch(&mut connection).await.unwrap(), ["a 1", "b 2", "c 3"]);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the connection was reused"
        );
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_across_reads_and_chunk_boundaries() {
        let (addr, accepted) = serve(vec![vec![
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"4\r\nfir",
                b"s\r\n6;ext=1\r\nt 1\nse\r\n",
                b"7\r\ncond 2\n\r\n0\r\n",
                b"X-Trailer: yes\r\n\r\n",
            ],
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nx 1\r\n0\r\n\r\n"],
        ]]);
        let mut connection = Connection::new(&addr, "/metrics");
        assert_eq!(
            fetch(&mut connection).await.unwrap(),
            ["first 1", "second 2"]
        );
        assert_eq!(fetch(&mut connection).await.unwrap(), ["x 1"]);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connection_close_and_a_pod_closing_an_idle_connection_reconnect() {
        let (addr, accepted) = serve(vec![
            vec![vec![
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\na 1\n",
            ]],
            // Keep-alive, but the server closes after this response (an idle timeout).
            vec![vec![LENGTH]],
            vec![vec![b"HTTP/1.0 200 OK\r\n\r\nuntil 1\nclose 2\n"]],
            vec![vec![LENGTH]],
        ]);
        let mut connection = Connection::new(&addr, "/metrics");
        assert_eq!(fetch(&mut connection).await.unwrap(), ["a 1"]);
        assert!(!connection.is_open(), "`Connection: close` is honoured");
        assert_eq!(fetch(&mut connection).await.unwrap(), ["a 1", "b 2", "c 3"]);
        assert!(connection.is_open());
        std::thread::sleep(Duration::from_millis(50)); // the server has closed it by now
        assert_eq!(
            fetch(&mut connection).await.unwrap(),
            ["until 1", "close 2"],
            "the request is sent again on a new connection"
        );
        assert!(!connection.is_open(), "a body read until close closes");
        assert_eq!(fetch(&mut connection).await.unwrap(), ["a 1", "b 2", "c 3"]);
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn failures_are_told_apart() {
        let (addr, _) = serve(vec![
            vec![vec![
                b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n",
            ]],
            vec![vec![b"<html>not http</html>\r\n\r\n"]],
            vec![vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut 1\n",
            ]],
            vec![vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            ]],
            vec![vec![
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx",
            ]],
        ]);
        let mut connection = Connection::new(&addr, "/metrics");
        assert!(
            matches!(fetch(&mut connection).await, Err(FetchError::Unusable(e)) if e.contains("503"))
        );
        assert!(
            matches!(fetch(&mut connection).await, Err(FetchError::Unusable(e)) if e.contains("not an HTTP response"))
        );
        assert!(
            matches!(fetch(&mut connection).await, Err(FetchError::Unreachable(e)) if e.contains("middle of the body"))
        );
        assert!(
            matches!(fetch(&mut connection).await, Err(FetchError::Unusable(e)) if e.contains("chunk size"))
        );
        assert!(
            matches!(fetch(&mut connection).await, Err(FetchError::Unusable(e)) if e.contains("gzip"))
        );
        assert!(!connection.is_open());

        let refused = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let mut connection = Connection::new(&refused, "/metrics");
        assert!(matches!(
            fetch(&mut connection).await,
            Err(FetchError::Unreachable(e)) if e.starts_with("connect")
        ));
    }

    #[tokio::test]
    async fn a_line_without_end_is_refused_at_one_mebibyte() {
        static HUGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let huge: &'static [u8] = HUGE.get_or_init(|| vec![b'x'; MAX_LINE + 10]);
        let (addr, _) = serve(vec![vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1048586\r\n\r\n",
            huge,
        ]]]);
        let mut connection = Connection::new(&addr, "/metrics");
        assert!(matches!(
            fetch(&mut connection).await,
            Err(FetchError::Unusable(e)) if e.contains("longer than 1 MiB")
        ));
    }

    #[tokio::test]
    async fn an_error_from_the_line_reader_stops_the_exchange() {
        let (addr, accepted) = serve(vec![vec![vec![LENGTH]], vec![vec![LENGTH]]]);
        let mut connection = Connection::new(&addr, "/metrics");
        let result = connection
            .fetch_lines(|line| match line {
                b"b 2" => Err("bad line".into()),
                _ => Ok(()),
            })
            .await;
        assert_eq!(result, Err(FetchError::Unusable("bad line".into())));
        assert!(
            !connection.is_open(),
            "a half-read response closes the connection"
        );
        assert_eq!(fetch(&mut connection).await.unwrap(), ["a 1", "b 2", "c 3"]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
