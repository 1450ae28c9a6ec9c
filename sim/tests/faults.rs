//! Faults set through `/admin/fault`, and `/admin/reset`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn error_rate_one_fails_every_inference_request_but_not_health() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    assert_eq!(
        post(addr, "/admin/fault", &json!({"error_rate": 1.0}))
            .await
            .status,
        200
    );
    let answer = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 1}),
    )
    .await;
    assert_eq!(answer.status, 500);
    assert!(answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("injected"));
    assert_eq!(get(addr, "/health").await.status, 200);
    assert_eq!(get(addr, "/admin/fault").await.json()["error_rate"], 1.0);
    post(addr, "/admin/fault", &json!({})).await;
    assert_eq!(
        post(
            addr,
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 1})
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn a_partial_error_rate_fails_about_that_fraction() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    post(addr, "/admin/fault", &json!({"error_rate": 0.5})).await;
    let mut failures = 0;
    for _ in 0..200 {
        if post(
            addr,
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 1}),
        )
        .await
        .status
            == 500
        {
            failures += 1;
        }
    }
    assert!((60..=140).contains(&failures), "{failures} of 200 failed");
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    post(addr, "/admin/fault", &json!({"latency_ms": 300})).await;
    let started = Instant::now();
    assert_eq!(
        post(
            addr,
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 1})
        )
        .await
        .status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn hang_never_answers_until_cleared() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    post(addr, "/admin/fault", &json!({"hang": true})).await;
    let hung = tokio::time::timeout(Duration::from_millis(300), get(addr, "/health")).await;
    assert!(hung.is_err(), "a hung pod answered");
    post(addr, "/admin/fault", &json!({"hang": false})).await;
    assert_eq!(get(addr, "/health").await.status, 200);
}

#[tokio::test]
async fn close_connections_drops_requests_and_cuts_streams() {
    let sim = start(
        PodConfig {
            time_scale: 0.5,
            ..PodConfig::default()
        },
        1,
    );
    let addr = sim.pods()[0].addr();
    // A long stream in flight...
    let body = json!({"prompt": "x", "max_tokens": 2000, "stream": true}).to_string();
    let response = send(addr, "POST", "/v1/completions", Some(&body))
        .await
        .unwrap();
    let mut stream = response.into_body();
    use http_body_util::BodyExt;
    assert!(stream.frame().await.unwrap().is_ok());
    post(addr, "/admin/fault", &json!({"close_connections": true})).await;
    // ...is cut, and new requests get no answer at all.
    let cut = loop {
        match stream.frame().await {
            Some(Ok(_)) => continue,
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(cut, "the stream ended cleanly instead of being cut");
    assert!(send(addr, "GET", "/health", None).await.is_err());
    post(addr, "/admin/fault", &json!({})).await;
    assert_eq!(get(addr, "/health").await.status, 200);
}

#[tokio::test]
async fn die_stops_the_pod_and_frees_its_port() {
    let sim = start(fast_config(), 2);
    let (dead, alive) = (sim.pods()[0].addr(), sim.pods()[1].addr());
    assert_eq!(
        post(dead, "/admin/fault", &json!({"die": true}))
            .await
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(dead).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "a dead pod still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(alive, "/health").await.status, 200);
}

#[tokio::test]
async fn rejects_malformed_faults() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    assert_eq!(
        post(addr, "/admin/fault", &json!({"error_rate": 2.0}))
            .await
            .status,
        400
    );
    assert_eq!(
        post(addr, "/admin/fault", &json!({"latncy_ms": 5}))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn reset_gives_a_cold_pod() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    let body = json!({"prompt": prompt(3, 200), "max_tokens": 2});
    post(addr, "/v1/completions", &body).await;
    post(addr, "/v1/completions", &body).await;
    assert!(
        metric(
            &get(addr, "/metrics").await.body,
            "vllm:prefix_cache_hits_total"
        ) > 0.0
    );
    assert_eq!(post(addr, "/admin/reset", &json!({})).await.status, 200);
    let metrics = get(addr, "/metrics").await.body;
    assert_eq!(metric(&metrics, "vllm:prefix_cache_queries_total"), 0.0);
    post(addr, "/v1/completions", &body).await;
    let metrics = get(addr, "/metrics").await.body;
    assert_eq!(
        metric(&metrics, "vllm:prefix_cache_hits_total"),
        0.0,
        "the cache was emptied"
    );
    assert!(metric(&metrics, "vllm:prefix_cache_queries_total") > 0.0);
}

#[tokio::test]
async fn reset_aborts_requests_in_flight() {
    let sim = start(
        PodConfig {
            time_scale: 0.5,
            ..PodConfig::default()
        },
        1,
    );
    let addr = sim.pods()[0].addr();
    let pending = tokio::spawn(async move {
        post(
            addr,
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 5000}),
        )
        .await
        .status
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(addr, "/admin/reset", &json!({})).await;
    assert_eq!(pending.await.unwrap(), 503);
    assert_eq!(
        metric(
            &get(addr, "/metrics").await.body,
            "vllm:num_requests_running"
        ),
        0.0
    );
}
