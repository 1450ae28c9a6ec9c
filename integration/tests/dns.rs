//! Pool discovery by DNS, as in Kubernetes with a headless Service (deploy/kubernetes): a real
//! DNS server on loopback (dnslib from .venv) answers the pool's name with the addresses of
//! simulated vLLM pods on 127.0.0.x, all on one port; Envoy's STRICT_DNS cluster resolves it
//! with the module's load-balancing policy. Changing the answer changes the pool, live.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use inference_sim::{PodConfig, Simulator};
use integration::client::{complete, eventually};
use integration::envoy::strict_dns;
use integration::paths::repo_root;
use integration::{Envoy, EnvoyConfig};

const POOL_NAME: &str = "inference-pool.test";

/// A DNS server answering `A` queries for one name with the addresses listed in a file (read
/// at every query, TTL 0), NXDOMAIN for other names, no records for other types.
const SERVER: &str = r#"
import socket, sys
from dnslib import A, DNSRecord, QTYPE, RCODE, RR
name, answers = sys.argv[1].lower(), sys.argv[2]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
while True:
    data, peer = sock.recvfrom(4096)
    try:
        query = DNSRecord.parse(data)
    except Exception:
        continue
    reply = query.reply()
    asked = str(query.q.qname).rstrip(".").lower()
    if asked != name:
        reply.header.rcode = RCODE.NXDOMAIN
    elif query.q.qtype == QTYPE.A:
        with open(answers) as f:
            for ip in f.read().split():
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(ip), ttl=0))
    sock.sendto(reply.pack(), peer)
    print("answered", asked, QTYPE[query.q.qtype], flush=True)
"#;

struct DnsServer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    answers: PathBuf,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl DnsServer {
    fn start(ips: &[Ipv4Addr]) -> DnsServer {
        let dir = tempfile::tempdir().unwrap();
        let answers = dir.path().join("answers");
        write_answer(&answers, ips);
        let python = repo_root().join(".venv/bin/python3");
        let mut child = Command::new(&python)
            .args(["-u", "-c", SERVER, POOL_NAME])
            .arg(&answers)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run `make venv`)", python.display()));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut port = String::new();
        stdout.read_line(&mut port).unwrap();
        let port = port
            .trim()
            .parse::<u16>()
            .unwrap_or_else(|_| panic!("the DNS server did not start (dnslib in .venv?)"));
        DnsServer {
            child,
            stdout,
            answers,
            _dir: dir,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }

    /// Replaces the A records.
    fn set_answer(&self, ips: &[Ipv4Addr]) {
        write_answer(&self.answers, ips);
    }

    /// Waits until the server has answered an `A` query for the pool's name.
    fn await_query(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "DNS server exited"
            );
            if line.trim() == format!("answered {POOL_NAME} A") {
                return;
            }
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the A records atomically (a rename): a query never sees half a list.
fn write_answer(path: &std::path::Path, ips: &[Ipv4Addr]) {
    let text: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Simulated pods on `ips`, all on the same port (DNS gives addresses, the cluster the port).
fn pods_on_one_port(ips: &[Ipv4Addr]) -> (Simulator, u16) {
    for _ in 0..10 {
        let port = TcpListener::bind((ips[0], 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::from((*ip, port))).collect();
        let config = PodConfig {
            time_scale: 0.02,
            ..PodConfig::default()
        };
        if let Ok(sim) = Simulator::start(config, &addrs) {
            return (sim, port);
        }
    }
    panic!("no port free on every one of {ips:?}");
}

/// A long shared system prompt per group, a short question per request.
fn group_prompt(group: usize, question: usize) -> String {
    let system: String = (0..60)
        .map(|w| format!("g{group}word{w} "))
        .collect::<String>();
    format!(
        "{system}\nQuestion {question}: what about {}?",
        question * 7 + group
    )
}

/// Sends `per_group` requests of each group; the pods that served each group.
fn serve_groups(envoy: &Envoy, groups: usize, per_group: usize, round: usize) -> Vec<Vec<String>> {
    (0..groups)
        .map(|g| {
            (0..per_group)
                .map(|q| {
                    let (status, pod) = complete(&envoy.url, &group_prompt(g, round * 100 + q), 1);
                    assert_eq!(status, 200);
                    pod.expect("destination header")
                })
                .collect()
        })
        .collect()
}

/// The one pod each group stayed on; panics if a group was split.
fn group_homes(served: &[Vec<String>]) -> Vec<String> {
    served
        .iter()
        .enumerate()
        .map(|(g, pods)| {
            assert!(
                pods.iter().all(|p| *p == pods[0]),
                "group {g} split: {pods:?}"
            );
            pods[0].clone()
        })
        .collect()
}

/// Which pod served each of `n` requests with distinct short prompts.
fn spread(envoy: &Envoy, n: usize, tag: &str) -> HashMap<String, usize> {
    let mut served = HashMap::new();
    for i in 0..n {
        let (status, pod) = complete(&envoy.url, &format!("{tag} unrelated prompt {i}"), 1);
        assert_eq!(status, 200);
        *served.entry(pod.expect("destination header")).or_insert(0) += 1;
    }
    served
}

fn members(envoy: &Envoy) -> u64 {
    envoy.stat("cluster.inference_pool.membership_total")
}

/// Three pods in the DNS answer, six shared-prefix groups served by them.
struct Setup {
    _sim: Simulator,
    dns: DnsServer,
    envoy: Envoy,
    ips: Vec<Ipv4Addr>,
    pods: Vec<String>,
    homes: Vec<String>,
}

const GROUPS: usize = 6;

fn setup() -> Setup {
    let ips: Vec<Ipv4Addr> = (2..=5).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let (sim, port) = pods_on_one_port(&ips);
    let pods: Vec<String> = sim.addrs().iter().map(ToString::to_string).collect();
    let mut dns = DnsServer::start(&ips[..3]);
    // Prefix affinity alone decides (no queue or KV-cache scorer, no hot-spot guard): what is
    // under test is how membership changes treat the prefix index, and on a loaded machine a
    // late scrape can make the load scorers move a group for reasons of their own.
    let config = EnvoyConfig::new(vec![pods[0].clone()]).filter_config(
        r#"{"scheduler": {"profiles": {"default": {"filters": [{"type": "health"}], "scorers": [{"type": "prefix"}]}}}}"#,
    );
    let envoy = Envoy::try_start_edited(&config, |yaml| {
        strict_dns(yaml, POOL_NAME, port, dns.addr, 200)
    })
    .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    dns.await_query();
    eventually("three members from DNS", Duration::from_secs(10), || {
        members(&envoy) == 3
    });
    let homes = group_homes(&serve_groups(&envoy, GROUPS, 3, 0));
    assert!(homes.iter().all(|p| pods[..3].contains(p)), "{homes:?}");
    Setup {
        _sim: sim,
        dns,
        envoy,
        ips,
        pods,
        homes,
    }
}

#[test]
fn a_pod_added_to_the_dns_answer_gets_traffic_and_groups_stay_put() {
    let s = setup();
    s.dns.set_answer(&s.ips);
    eventually("four members from DNS", Duration::from_secs(10), || {
        members(&s.envoy) == 4
    });
    let joined = &s.pods[3];
    let mut round = 0;
    eventually("the new pod gets traffic", Duration::from_secs(15), || {
        round += 1;
        spread(&s.envoy, 8, &format!("after join {round}")).contains_key(joined)
    });
    let after = spread(&s.envoy, 24, "after join");
    assert_eq!(after.len(), 4, "every pod serves: {after:?}");
    let homes = group_homes(&serve_groups(&s.envoy, GROUPS, 2, 1));
    assert_eq!(homes, s.homes, "groups moved when a pod joined");
}

/// The pod serving the fewest groups (some group stays on the other two).
fn leaving_index(s: &Setup) -> usize {
    (0..3)
        .min_by_key(|&i| s.homes.iter().filter(|p| **p == s.pods[i]).count())
        .unwrap()
}

fn remove_from_answer(s: &Setup, leaving: usize) {
    let remaining: Vec<Ipv4Addr> = s.ips[..3]
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leaving)
        .map(|(_, ip)| *ip)
        .collect();
    s.dns.set_answer(&remaining);
    eventually("two members", Duration::from_secs(10), || {
        members(&s.envoy) == 2
    });
}

#[test]
fn a_pod_removed_from_the_dns_answer_gets_no_traffic() {
    let s = setup();
    let leaving = leaving_index(&s);
    remove_from_answer(&s, leaving);
    let after = spread(&s.envoy, 24, "after leave");
    assert!(
        !after.contains_key(&s.pods[leaving]),
        "the removed pod still gets traffic: {after:?}"
    );
    assert_eq!(after.values().sum::<usize>(), 24);
    assert_eq!(after.len(), 2, "both remaining pods serve: {after:?}");
}

#[test]
// Failed about 1 run in 3 while pod state was process-wide (a pod leaving one LB instance's
// view made the shared registry forget state other views still used); with one pool per
// cluster whose index keeps exactly its members, 9 of 9 runs passed.
fn groups_on_the_remaining_pods_stay_put_when_a_pod_leaves() {
    let s = setup();
    let leaving = leaving_index(&s);
    remove_from_answer(&s, leaving);
    let served = serve_groups(&s.envoy, GROUPS, 3, 2);
    for (g, (was, pods)) in s.homes.iter().zip(&served).enumerate() {
        if *was == s.pods[leaving] {
            assert!(!pods.contains(was), "group {g} still on the removed pod");
            assert!(
                pods[1..].iter().all(|p| *p == pods[1]),
                "group {g} split after moving: {pods:?}"
            );
        } else {
            assert!(
                pods.iter().all(|p| p == was),
                "group {g} left its pod {was}: {pods:?}"
            );
        }
    }
}
