//! The `inference-sim` binary: readiness lines, serving, clean exit on SIGTERM, config errors.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

#[tokio::test]
async fn serves_several_pods_and_exits_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inference-sim"))
        .args(["--pods", "3", "--base-port", "0", "--time-scale", "0.05"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start inference-sim");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for index in 0..3 {
        let line = lines.next().expect("a readiness line").unwrap();
        let prefix = format!("inference-sim: pod {index} listening on ");
        addrs.push(
            line.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .unwrap(),
        );
    }
    for (index, addr) in addrs.iter().enumerate() {
        let answer = common::get(*addr, "/health").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.pod(), index.to_string());
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "inference-sim ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn bad_flags_fail_with_a_message_naming_the_flag() {
    let cases: [(&[&str], &str); 3] = [
        (&["--block-size", "0"], "--block-size"),
        (&["--time-scale=-1"], "time scale"),
        (&["--max-model-len", "999999999"], "--max-model-len"),
    ];
    for (args, needle) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_inference-sim"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
