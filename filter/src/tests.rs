//! Filter and policy logic against an in-memory fake of Envoy (no Envoy process here; the
//! integration tests run the same logic inside real Envoy).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::DESTINATION_HEADER;
use crate::envoy::*;
use crate::http_filter::InferenceFilter;
use crate::lb_policy::LbPolicy;
use crate::module_config::ModuleConfig;
use crate::pool::{Health, Member, Pool, PoolSnapshot};
use crate::pool_config::PoolConfig;
use crate::pools;

/// Makes (or finds) the pool of `cluster`, without a scraper, and publishes `members`; the
/// pool lives while the returned handle does.
fn publish(cluster: &str, members: PoolSnapshot) -> Arc<Pool> {
    let pool = pools::acquire(cluster, &PoolConfig::default(), unscraped_pool).unwrap();
    pool.publish(members);
    pool
}

fn unscraped_pool(cluster: &str, config: PoolConfig) -> Result<Pool, String> {
    Ok(Pool::new(cluster, config))
}

#[derive(Default)]
struct FakeStream {
    request_headers: HashMap<String, Vec<u8>>,
    response_headers: HashMap<String, String>,
    body: Vec<u8>,
    buffer_limit: Option<u64>,
    reply: Option<(u32, Vec<u8>)>,
    reply_headers: Vec<(String, String)>,
    cluster: Option<String>,
    upstream: Option<String>,
    override_host: Option<String>,
    /// The upstream response's `:status` and `content-type`.
    status: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    /// The response body chunk being passed on.
    response_chunk: Vec<u8>,
}

impl FakeStream {
    fn post(path: &str, cluster: &str) -> Self {
        let mut s = FakeStream {
            cluster: Some(cluster.into()),
            ..Default::default()
        };
        s.request_headers.insert(":method".into(), b"POST".to_vec());
        s.request_headers
            .insert(":path".into(), path.as_bytes().to_vec());
        s
    }

    fn reply_message(&self) -> String {
        let (_, body) = self.reply.as_ref().expect("a local reply");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["error"]["message"].as_str().unwrap().to_owned()
    }
}

impl EnvoyHttpFilter for FakeStream {
    fn response_header(&self, name: &str) -> Option<&[u8]> {
        match name {
            ":status" => self.status.as_deref(),
            "content-type" => self.content_type.as_deref(),
            _ => None,
        }
    }
    fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.request_headers.get(name).map(Vec::as_slice)
    }
    fn set_request_header(&mut self, name: &str, value: &str) -> bool {
        self.request_headers
            .insert(name.into(), value.as_bytes().to_vec());
        true
    }
    fn set_response_header(&mut self, name: &str, value: &str) -> bool {
        self.response_headers.insert(name.into(), value.into());
        true
    }
    fn set_buffer_limit(&mut self, bytes: u64) {
        self.buffer_limit = Some(bytes);
    }
    fn request_body_size(&self) -> u64 {
        self.body.len() as u64
    }
    fn visit_response_chunk(&self, visit: &mut dyn FnMut(&[u8])) {
        visit(&self.response_chunk);
    }
    fn read_request_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body);
    }
    fn send_response(
        &mut self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
        _details: &str,
    ) {
        assert!(self.reply.is_none(), "two local replies");
        self.reply_headers = headers
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        self.reply = Some((status, body.to_vec()));
    }
    fn cluster_name(&self) -> Option<&str> {
        self.cluster.as_deref()
    }
    fn upstream_address(&self) -> Option<&str> {
        self.upstream.as_deref()
    }
    fn set_upstream_override_host(&mut self, address: &str) -> bool {
        self.override_host = Some(address.into());
        true
    }
}

fn filter(config: &str) -> InferenceFilter {
    InferenceFilter::new(Arc::new(
        ModuleConfig::from_json(config.as_bytes()).unwrap(),
    ))
}

fn healthy(addresses: &[&str]) -> PoolSnapshot {
    PoolSnapshot {
        members: addresses
            .iter()
            .map(|a| Member {
                address: (*a).into(),
                health: Health::Healthy,
            })
            .collect(),
    }
}

/// Runs a whole request through the filter: headers, one body chunk, end of stream.
fn run(f: &mut InferenceFilter, s: &mut FakeStream, body: &str) -> BodyStatus {
    assert_eq!(f.on_request_headers(s, false), HeadersStatus::StopIteration);
    s.body = body.as_bytes().to_vec();
    f.on_request_body(s, true)
}

#[test]
fn an_inference_request_is_routed_to_a_routable_member() {
    let _pool = publish("t-route", healthy(&["127.0.0.1:80", "127.0.0.2:80"]));
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-route");
    assert_eq!(
        run(&mut f, &mut s, r#"{"model":"m","prompt":"hi"}"#),
        BodyStatus::Continue
    );
    let dest = String::from_utf8(s.request_headers[DESTINATION_HEADER].clone()).unwrap();
    assert!(dest == "127.0.0.1:80" || dest == "127.0.0.2:80");
    assert_eq!(f.routed_to(), Some(dest.as_str()));
    assert!(s.buffer_limit.unwrap() > crate::config::DEFAULT_MAX_BODY_BYTES);

    // The response names the host that actually served (here: a retry went elsewhere).
    s.upstream = Some("127.0.0.9:80".into());
    f.on_response_headers(&mut s);
    assert_eq!(s.response_headers[DESTINATION_HEADER], "127.0.0.9:80");
}

#[test]
fn unhealthy_members_are_never_chosen() {
    let _pool = publish(
        "t-health",
        PoolSnapshot {
            members: vec![
                Member {
                    address: "127.0.0.1:80".into(),
                    health: Health::Unhealthy,
                },
                Member {
                    address: "127.0.0.2:80".into(),
                    health: Health::Healthy,
                },
            ],
        },
    );
    for i in 0..20 {
        let mut f = filter("");
        let mut s = FakeStream::post("/v1/completions", "t-health");
        run(&mut f, &mut s, &format!(r#"{{"prompt":"p{i}"}}"#));
        assert_eq!(f.routed_to(), Some("127.0.0.2:80"));
    }
}

#[test]
fn the_response_header_can_be_turned_off() {
    let _pool = publish("t-off", healthy(&["127.0.0.1:80"]));
    let mut f = filter(r#"{"response_header": false}"#);
    let mut s = FakeStream::post("/v1/completions", "t-off");
    run(&mut f, &mut s, r#"{"prompt":"hi"}"#);
    f.on_response_headers(&mut s);
    assert!(s.response_headers.is_empty());
    assert!(
        s.request_headers.contains_key(DESTINATION_HEADER),
        "upstream still gets it"
    );
}

#[test]
fn other_methods_and_paths_pass_through() {
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/embeddings", "t-any");
    assert_eq!(f.on_request_headers(&mut s, false), HeadersStatus::Continue);
    assert_eq!(f.on_request_body(&mut s, true), BodyStatus::Continue);
    assert!(s.reply.is_none() && s.buffer_limit.is_none());

    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-any");
    s.request_headers.insert(":method".into(), b"GET".to_vec());
    assert_eq!(f.on_request_headers(&mut s, true), HeadersStatus::Continue);
}

#[test]
fn a_cluster_without_our_policy_falls_back_to_envoys_balancing() {
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-not-published");
    assert_eq!(
        run(&mut f, &mut s, r#"{"prompt":"hi"}"#),
        BodyStatus::Continue
    );
    assert!(!s.request_headers.contains_key(DESTINATION_HEADER));
    assert!(s.reply.is_none());
}

#[test]
fn malformed_and_empty_bodies_are_answered_with_400() {
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-any");
    assert_eq!(
        run(&mut f, &mut s, "{oops"),
        BodyStatus::StopIterationNoBuffer
    );
    assert_eq!(s.reply.as_ref().unwrap().0, 400);
    assert!(s.reply_message().contains("not valid JSON"));
    assert!(f.replied());

    let mut f = filter("");
    let mut s = FakeStream::post("/v1/chat/completions", "t-any");
    assert_eq!(
        f.on_request_headers(&mut s, true),
        HeadersStatus::StopIteration
    );
    assert_eq!(s.reply.as_ref().unwrap().0, 400);
}

#[test]
fn oversize_is_413_by_declared_length_or_while_buffering() {
    let mut f = filter(r#"{"max_body_bytes": 10}"#);
    let mut s = FakeStream::post("/v1/completions", "t-any");
    s.request_headers
        .insert("content-length".into(), b"11".to_vec());
    assert_eq!(
        f.on_request_headers(&mut s, false),
        HeadersStatus::StopIteration
    );
    assert_eq!(s.reply.as_ref().unwrap().0, 413);

    let mut f = filter(r#"{"max_body_bytes": 10}"#);
    let mut s = FakeStream::post("/v1/completions", "t-any");
    assert_eq!(
        f.on_request_headers(&mut s, false),
        HeadersStatus::StopIteration
    );
    s.body = b"0123456789A".to_vec();
    assert_eq!(
        f.on_request_body(&mut s, false),
        BodyStatus::StopIterationNoBuffer
    );
    assert_eq!(s.reply.as_ref().unwrap().0, 413);
    assert!(s.reply_message().contains("10 bytes"));
    // Later chunks are dropped, not forwarded.
    assert_eq!(
        f.on_request_body(&mut s, true),
        BodyStatus::StopIterationNoBuffer
    );
}

#[test]
fn a_body_ended_by_trailers_is_routed_at_the_trailers() {
    let _pool = publish("t-trailers", healthy(&["127.0.0.1:80"]));
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-trailers");
    f.on_request_headers(&mut s, false);
    s.body = br#"{"prompt":"x"}"#.to_vec();
    assert_eq!(
        f.on_request_body(&mut s, false),
        BodyStatus::StopIterationAndBuffer
    );
    assert_eq!(f.on_request_trailers(&mut s), HeadersStatus::Continue);
    assert_eq!(f.routed_to(), Some("127.0.0.1:80"));
}

// ---- load-balancing policy ----

struct FakeCluster {
    name: String,
    hosts: Vec<(String, Health)>,
}

impl EnvoyLoadBalancer for FakeCluster {
    fn cluster_name(&self) -> String {
        self.name.clone()
    }
    fn host_count(&self) -> usize {
        self.hosts.len()
    }
    fn host_address(&self, index: usize) -> Option<String> {
        self.hosts.get(index).map(|h| h.0.clone())
    }
    fn host_health(&self, index: usize) -> Health {
        self.hosts[index].1
    }
    fn healthy_host_count(&self) -> usize {
        self.hosts.iter().filter(|h| h.1 == Health::Healthy).count()
    }
    fn healthy_host_address(&self, index: usize) -> Option<String> {
        self.hosts
            .iter()
            .filter(|h| h.1 == Health::Healthy)
            .nth(index)
            .map(|h| h.0.clone())
    }
}

struct FakeAttempt {
    destination: Option<Vec<u8>>,
    /// Full-list indexes the retry predicate rejects.
    tried: Vec<usize>,
}

impl EnvoyLbContext for FakeAttempt {
    fn downstream_header(&self, name: &str) -> Option<&[u8]> {
        (name == DESTINATION_HEADER)
            .then_some(self.destination.as_deref())
            .flatten()
    }
    fn should_select_another_host(&self, index: usize) -> bool {
        self.tried.contains(&index)
    }
}

fn cluster(name: &str, hosts: &[(&str, Health)]) -> FakeCluster {
    FakeCluster {
        name: name.into(),
        hosts: hosts.iter().map(|(a, h)| ((*a).into(), *h)).collect(),
    }
}

#[test]
fn membership_is_published_for_the_filter() {
    let c = cluster(
        "lb-publish",
        &[
            ("1.0.0.1:1", Health::Healthy),
            ("1.0.0.2:1", Health::Unhealthy),
        ],
    );
    let mut lb = lb_policy();
    lb.on_membership_update(&c);
    let pool = pools::find("lb-publish").unwrap();
    let members = pool.members();
    let snap = &members.snapshot;
    assert_eq!(snap.members.len(), 2);
    assert_eq!(snap.routable().count(), 1);
}

#[test]
fn the_filters_choice_is_applied_as_a_healthy_list_index() {
    // Full list: [a (unhealthy), b, c]; healthy list: [b, c].
    let c = cluster(
        "lb-apply",
        &[
            ("a:1", Health::Unhealthy),
            ("b:1", Health::Healthy),
            ("c:1", Health::Healthy),
        ],
    );
    let mut lb = lb_policy();
    lb.on_membership_update(&c);
    let pick = |dest: &str, tried: Vec<usize>| {
        let mut lb2 = lb_policy();
        lb2.on_membership_update(&c);
        lb2.choose_host(&FakeAttempt {
            destination: Some(dest.as_bytes().to_vec()),
            tried,
        })
    };
    assert_eq!(pick("c:1", vec![]), Some(1));
    assert_eq!(pick("b:1", vec![]), Some(0));
    // Retry after b failed (full index 1): must move to c.
    assert_eq!(pick("b:1", vec![1]), Some(1));
    // Chosen host gone unhealthy meanwhile: another healthy host.
    assert!(pick("a:1", vec![]).is_some());
    // Everything tried: still answer rather than fail the attempt.
    assert!(pick("b:1", vec![1, 2]).is_some());
}

#[test]
fn unscheduled_requests_round_robin_over_untried_hosts() {
    let c = cluster(
        "lb-rr",
        &[
            ("a:1", Health::Healthy),
            ("b:1", Health::Healthy),
            ("c:1", Health::Healthy),
        ],
    );
    let mut lb = lb_policy();
    lb.on_membership_update(&c);
    let picks: Vec<_> = (0..6)
        .map(|_| {
            lb.choose_host(&FakeAttempt {
                destination: None,
                tried: vec![],
            })
            .unwrap()
        })
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    let p = lb
        .choose_host(&FakeAttempt {
            destination: None,
            tried: vec![0],
        })
        .unwrap();
    assert_ne!(p, 0);
}

#[test]
fn no_healthy_host_means_no_pick() {
    let c = cluster("lb-none", &[("a:1", Health::Unhealthy)]);
    let mut lb = lb_policy();
    lb.on_membership_update(&c);
    assert_eq!(
        lb.choose_host(&FakeAttempt {
            destination: Some(b"a:1".to_vec()),
            tried: vec![]
        }),
        None
    );
}

// ---- panic guard at the stream level ----

#[test]
fn a_panic_in_a_request_hook_answers_500_and_the_stream_stays_failed() {
    use crate::guarded_stream::GuardedStream;
    let config = Arc::new(ModuleConfig::from_json(b"").unwrap());
    let mut stream = GuardedStream::new(config);
    let mut s = FakeStream::post("/v1/completions", "t-panic");
    let status = stream.request(
        &mut s,
        "test",
        HeadersStatus::StopIteration,
        |_, _| -> HeadersStatus { panic!("injected failure") },
    );
    assert_eq!(status, HeadersStatus::StopIteration);
    assert_eq!(s.reply.as_ref().unwrap().0, 500);
    assert!(s.reply_message().contains("injected failure"));
    // Later hooks never run filter code again and do not answer twice.
    let mut ran = false;
    let status = stream.request(&mut s, "test", BodyStatus::StopIterationNoBuffer, |_, _| {
        ran = true;
        BodyStatus::Continue
    });
    assert_eq!(status, BodyStatus::StopIterationNoBuffer);
    assert!(!ran);
    assert_eq!(
        stream.response(&mut s, "test", HeadersStatus::Continue, |_, _| {
            HeadersStatus::StopIteration
        }),
        HeadersStatus::Continue
    );
}

#[test]
fn a_panic_after_a_local_reply_does_not_answer_twice() {
    use crate::guarded_stream::GuardedStream;
    let config = Arc::new(ModuleConfig::from_json(b"").unwrap());
    let mut stream = GuardedStream::new(config);
    let mut s = FakeStream::post("/v1/completions", "t-panic2");
    stream.request(&mut s, "test", HeadersStatus::StopIteration, |f, h| {
        f.on_request_headers(h, true)
    });
    assert_eq!(s.reply.as_ref().unwrap().0, 400);
    // FakeStream asserts on a second reply.
    stream.request(
        &mut s,
        "test",
        BodyStatus::StopIterationNoBuffer,
        |_, _| -> BodyStatus { panic!("late") },
    );
}

#[test]
fn a_panic_in_the_response_phase_passes_the_response_through() {
    use crate::guarded_stream::GuardedStream;
    let config = Arc::new(ModuleConfig::from_json(b"").unwrap());
    let mut stream = GuardedStream::new(config);
    let mut s = FakeStream::post("/v1/completions", "t-panic3");
    let status = stream.response(
        &mut s,
        "test",
        HeadersStatus::Continue,
        |_, _| -> HeadersStatus { panic!("x") },
    );
    assert_eq!(status, HeadersStatus::Continue);
    assert!(s.reply.is_none());
}

// ---- saturation ----

fn full(waiting: u32, kv: f64) -> scheduler::PodMetrics {
    let mut m = scheduler::PodMetrics::idle();
    m.waiting = waiting;
    m.kv_usage = kv;
    m
}

#[test]
fn when_every_pod_is_full_sheddable_requests_get_429_and_others_the_least_loaded_pod() {
    let (a, b) = ("127.0.0.1:20001", "127.0.0.1:20002");
    let pool = publish("t-saturated", healthy(&[a, b]));
    pool.pods().get(a).unwrap().publish_metrics(full(9, 0.95));
    pool.pods().get(b).unwrap().publish_metrics(full(6, 0.90));

    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-saturated");
    s.request_headers.insert(
        "x-gateway-inference-criticality".into(),
        b"sheddable".to_vec(),
    );
    assert_eq!(
        run(&mut f, &mut s, r#"{"prompt":"hi"}"#),
        BodyStatus::StopIterationNoBuffer
    );
    assert_eq!(s.reply.as_ref().unwrap().0, 429);
    assert!(
        s.reply_headers
            .contains(&("retry-after".into(), "1".into())),
        "{:?}",
        s.reply_headers
    );
    assert!(s.reply_message().contains("saturated"));

    for criticality in [None, Some("critical"), Some("standard")] {
        let mut f = filter("");
        let mut s = FakeStream::post("/v1/completions", "t-saturated");
        if let Some(c) = criticality {
            s.request_headers.insert(
                "x-gateway-inference-criticality".into(),
                c.as_bytes().to_vec(),
            );
        }
        assert_eq!(
            run(&mut f, &mut s, r#"{"prompt":"hi"}"#),
            BodyStatus::Continue
        );
        assert_eq!(
            f.routed_to(),
            Some(b),
            "{criticality:?} goes to the shorter queue"
        );
    }
}

#[test]
fn sheddable_requests_are_served_while_some_pod_has_room() {
    let (a, b) = ("127.0.0.1:20011", "127.0.0.1:20012");
    let pool = publish("t-room", healthy(&[a, b]));
    pool.pods().get(a).unwrap().publish_metrics(full(9, 0.95));
    pool.pods().get(b).unwrap().publish_metrics(full(0, 0.10));
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-room");
    s.request_headers.insert(
        "x-gateway-inference-criticality".into(),
        b"sheddable".to_vec(),
    );
    assert_eq!(
        run(&mut f, &mut s, r#"{"prompt":"hi"}"#),
        BodyStatus::Continue
    );
    assert!(f.routed_to().is_some());
}

#[test]
fn an_unknown_criticality_is_a_400() {
    let _pool = publish("t-crit", healthy(&["127.0.0.1:20021"]));
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-crit");
    s.request_headers
        .insert("x-gateway-inference-criticality".into(), b"urgent".to_vec());
    run(&mut f, &mut s, r#"{"prompt":"hi"}"#);
    assert_eq!(s.reply.as_ref().unwrap().0, 400);
    assert!(s.reply_message().contains("urgent"));
}

#[test]
fn in_flight_is_counted_from_pick_to_the_end_of_the_stream() {
    let a = "127.0.0.1:20031";
    let pool = publish("t-inflight", healthy(&[a]));
    let pod = pool.pods().get(a).unwrap();
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-inflight");
    run(&mut f, &mut s, r#"{"prompt":"hi"}"#);
    assert_eq!(pod.in_flight(), 1);
    drop(f); // Envoy destroys the filter however the stream ended
    assert_eq!(pod.in_flight(), 0);
}

#[test]
fn a_retry_elsewhere_moves_the_in_flight_count_to_the_pod_that_serves() {
    let (a, b) = ("127.0.0.1:20041", "127.0.0.1:20042");
    let pool = publish("t-moved", healthy(&[a, b]));
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-moved");
    run(&mut f, &mut s, r#"{"prompt":"hi"}"#);
    let chosen = f.routed_to().unwrap().to_owned();
    let other = if chosen == a { b } else { a };
    s.upstream = Some(other.into());
    f.on_response_headers(&mut s);
    assert_eq!(pool.pods().get(&chosen).unwrap().in_flight(), 0);
    assert_eq!(pool.pods().get(other).unwrap().in_flight(), 1);
    drop(f);
    assert_eq!(pool.pods().get(other).unwrap().in_flight(), 0);
}

#[test]
fn when_envoy_marks_every_member_unhealthy_the_choice_bypasses_its_balancer() {
    let (a, b) = ("127.0.0.1:20051", "127.0.0.1:20052");
    let _pool = publish(
        "t-all-down",
        PoolSnapshot {
            members: vec![
                Member {
                    address: a.into(),
                    health: Health::Unhealthy,
                },
                Member {
                    address: b.into(),
                    health: Health::Unhealthy,
                },
            ],
        },
    );
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-all-down");
    assert_eq!(
        run(&mut f, &mut s, r#"{"prompt":"hi"}"#),
        BodyStatus::Continue
    );
    let chosen = f.routed_to().unwrap().to_owned();
    assert_eq!(s.override_host.as_deref(), Some(chosen.as_str()));

    // With one healthy member the balancer applies the choice as usual.
    let _pool = publish(
        "t-one-up",
        PoolSnapshot {
            members: vec![Member {
                address: a.into(),
                health: Health::Healthy,
            }],
        },
    );
    let mut f = filter("");
    let mut s = FakeStream::post("/v1/completions", "t-one-up");
    run(&mut f, &mut s, r#"{"prompt":"hi"}"#);
    assert!(s.override_host.is_none());
}

#[test]
fn a_pod_leaving_the_pool_is_forgotten_by_the_prefix_index() {
    let (a, b) = ("127.0.0.1:20061", "127.0.0.1:20062");
    let pool = publish("t-leave", healthy(&[a, b]));
    let mut f = filter("");
    let prompt = format!(
        r#"{{"prompt":"{}"}}"#,
        "a long shared system prompt ".repeat(20)
    );
    let mut s = FakeStream::post("/v1/completions", "t-leave");
    run(&mut f, &mut s, &prompt);
    let chosen = f.routed_to().unwrap().to_owned();
    let index = pool.index();
    assert!(index.pods() >= 1 && index.blocks() > 0);
    let before = index.blocks();

    let stays = if chosen == a { b } else { a };
    let pool = publish("t-leave", healthy(&[stays]));
    assert!(
        index.blocks() < before,
        "the departed pod's blocks are still indexed"
    );
    assert!(pool.pods().get(&chosen).is_none());
}

fn lb_policy() -> LbPolicy {
    LbPolicy::new(Arc::new(PoolConfig::default()), unscraped_pool)
}

#[test]
fn a_pod_failing_requests_in_a_row_is_paused_and_a_retry_elsewhere_counts_against_it() {
    let (a, b) = ("127.0.0.1:20071", "127.0.0.1:20072");
    let pool = publish("t-erroring", healthy(&[a, b]));
    let answer = |prompt: &str, upstream: Option<&str>, status: &str| -> String {
        let mut f = filter("");
        let mut s = FakeStream::post("/v1/completions", "t-erroring");
        run(&mut f, &mut s, &format!(r#"{{"prompt":"{prompt}"}}"#));
        let chosen = f.routed_to().unwrap().to_owned();
        s.upstream = Some(upstream.unwrap_or(&chosen).to_owned());
        s.status = Some(status.as_bytes().to_vec());
        f.on_response_headers(&mut s);
        chosen
    };
    // `a` answers 500 to everything, `b` 200: `a` is chosen until its streak pauses it.
    let now = std::time::Instant::now;
    let mut sent = 0;
    while !pool.pods().get(a).unwrap().answers().avoided(now()) {
        sent += 1;
        assert!(sent < 200, "the failing pod was never paused");
        let mut f = filter("");
        let mut s = FakeStream::post("/v1/completions", "t-erroring");
        run(&mut f, &mut s, &format!(r#"{{"prompt":"request {sent}"}}"#));
        let chosen = f.routed_to().unwrap().to_owned();
        s.upstream = Some(chosen.clone());
        s.status = Some(if chosen == a { "500" } else { "200" }.into());
        f.on_response_headers(&mut s);
    }
    let failures = PoolConfig::default().pod_errors.avoid_after;
    assert_eq!(
        pool.pods().get(a).unwrap().answers().failed(),
        u64::from(failures)
    );
    for i in 0..20 {
        assert_eq!(
            answer(&format!("after {i}"), Some(b), "200"),
            b,
            "the paused pod was chosen"
        );
    }
    // A retry that moved a request away from the pod it was sent to counts against that pod.
    let before = pool.pods().get(b).unwrap().answers().failed();
    answer("moved", Some(a), "200");
    assert_eq!(pool.pods().get(b).unwrap().answers().failed(), before + 1);
}

#[test]
fn a_streamed_answer_is_learned_for_the_next_turn() {
    let pool = publish("t-answer", healthy(&["127.0.0.1:20081", "127.0.0.1:20082"]));
    let system = "You are a patient teacher of computer science. ".repeat(4);
    let turn = |body: String, answer: Option<&str>| {
        let mut f = filter(r#"{"decision_header": true}"#);
        let mut s = FakeStream::post("/v1/chat/completions", "t-answer");
        run(&mut f, &mut s, &body);
        let chosen = f.routed_to().unwrap().to_owned();
        s.upstream = Some(chosen.clone());
        s.status = Some(b"200".to_vec());
        s.content_type = Some(b"text/event-stream".to_vec());
        f.on_response_headers(&mut s);
        if let Some(answer) = answer {
            let (a, b) = answer.split_at(answer.len() / 2);
            for (piece, end) in [(a, false), (b, true)] {
                s.response_chunk = format!(
                    "data: {}\n\n",
                    serde_json::json!({"choices":[{"index":0,"delta":{"content":piece}}]})
                )
                .into_bytes();
                f.on_response_body(&mut s, end);
            }
        }
        (
            chosen,
            s.response_headers[crate::config::DECISION_HEADER].clone(),
        )
    };
    let messages = |extra: &str| {
        format!(
            r#"{{"model":"m","messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"What is a cache, in a few words?"}}{extra}]}}"#
        )
    };
    let answer = "A cache keeps recently used data close, so the next use is fast and cheap.";
    let (first_pod, _) = turn(messages(""), Some(answer));
    let next = messages(&format!(
        r#",{{"role":"assistant","content":"{answer}"}},{{"role":"user","content":"And an LRU?"}}"#
    ));
    let (pod, decision) = turn(next.clone(), None);
    assert_eq!(pod, first_pod);
    // Every full block up to the new question was predicted cached: the answer's too.
    let hits: u32 = decision
        .rsplit_once(" prefix=")
        .and_then(|(_, p)| p.split_once('/'))
        .and_then(|(h, _)| h.parse().ok())
        .unwrap();
    let request = scheduler::request::parse(next.as_bytes(), scheduler::ApiKind::Chat).unwrap();
    let text = request.prompt_text();
    let before_question = text.find("user: And an LRU?").unwrap();
    assert_eq!(hits as usize, before_question / 64, "{decision}");
    drop(pool);
}
