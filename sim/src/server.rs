//! The accept loop of one pod. hyper's automatic HTTP/1.1 / HTTP/2 connection detects the
//! protocol itself, so an HTTP/2 prior-knowledge probe (SGLang's router sends gRPC health checks)
//! gets an immediate answer instead of stalling a parser that only speaks HTTP/1.1.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::api;
use crate::pod::Pod;

pub async fn serve(pod: Arc<Pod>, listener: TcpListener) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = pod.stopped() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("inference-sim: pod {} accept failed: {error}", pod.index);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pod = pod.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let handler_pod = pod.clone();
            let service = service_fn(move |request| api::handle(handler_pod.clone(), request));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            // A stopped pod drops its connections on the floor, like a crashed process.
            tokio::select! {
                _ = connection => {}
                () = pod.stopped() => {}
            }
        });
    }
}
