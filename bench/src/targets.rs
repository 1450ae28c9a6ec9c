//! The routing choices compared, each started in front of the same pods.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::{Envoy, EnvoyConfig};

/// Every target, in the order they run.
pub const ALL: [&str; 8] = [
    "envoy-round-robin",
    "envoy-least-request",
    "module-queue-kv",
    "module-prefix",
    "module-default",
    "sglang-cache-aware",
    "sglang-round-robin",
    "vllm-router",
];

/// Whether `target` names something `start` can run: one of [`ALL`], `module-default-x<N>` or
/// `module-precise-x<N>` (N Envoy replicas), or any of them with `-below-saturation` (the same
/// target at the scenario's calm rate).
pub fn known(target: &str) -> bool {
    let base = target.strip_suffix("-below-saturation").unwrap_or(target);
    ALL.contains(&base) || replicas(base).is_some()
}

/// The profile of the `module-<profile>-x<N>` targets: the module's default, or precise
/// prefix-cache scoring from the pods' KV events (the pool must know where the events are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    Default,
    Precise,
}

/// The precise target's filter config: the default profile's scorers with `precise-prefix` in
/// place of `prefix` (it scores pods without a synced event stream as `prefix` does).
pub const PRECISE_CONFIG: &str = r#"{"scheduler": {"default_profile": "precise", "profiles": {"precise": {"scorers": [{"type": "queue"}, {"type": "kv-cache"}, {"type": "precise-prefix"}, {"type": "lora-affinity"}]}}}}"#;

/// The profile and N of `module-default-x<N>` / `module-precise-x<N>`.
fn replicas(target: &str) -> Option<(Profile, usize)> {
    let (profile, n) = if let Some(n) = target.strip_prefix("module-default-x") {
        (Profile::Default, n)
    } else {
        (Profile::Precise, target.strip_prefix("module-precise-x")?)
    };
    let n = n.parse().ok().filter(|n| (1..=16).contains(n))?;
    Some((profile, n))
}

/// The module's filter config for each module target: the scheduler profile it runs.
fn module_config(target: &str) -> Option<&'static str> {
    match replicas(target) {
        Some((Profile::Default, _)) => return Some("{}"),
        Some((Profile::Precise, _)) => return Some(PRECISE_CONFIG),
        None => {}
    }
    match target {
        "module-queue-kv" => Some(
            r#"{"scheduler": {"profiles": {"default": {"scorers": [{"type": "queue"}, {"type": "kv-cache"}]}}}}"#,
        ),
        "module-prefix" => {
            Some(r#"{"scheduler": {"profiles": {"default": {"scorers": [{"type": "prefix"}]}}}}"#)
        }
        // Everything at its default: queue 1 : KV-cache 1 : prefix 1 (+ LoRA affinity, which
        // abstains for base-model requests), health / stale-metrics / hot-spot-guard filters.
        "module-default" => Some("{}"),
        _ => None,
    }
}

/// Where the pieces live.
#[derive(Clone)]
pub struct Env {
    /// Virtualenv holding `sglang-router` and `vllm-router`.
    pub router_venv: PathBuf,
    /// Directory for the targets' logs.
    pub log_dir: PathBuf,
    /// Envoy worker threads.
    pub envoy_concurrency: usize,
    /// The pool's settings (`lb_policy_config`) for the precise targets: where the pods' KV
    /// events are and which tokenizer they use; `Err` says why there are none (the precise
    /// targets are then skipped).
    pub precise_pool: Result<String, String>,
}

/// A running target; stopped on drop.
pub struct Running {
    /// Where clients send requests: one URL, or one per gateway replica.
    pub urls: Vec<String>,
    envoys: Vec<Envoy>,
    child: Option<Child>,
    pub log: Option<PathBuf>,
}

impl Running {
    /// Lines of the target's log that suggest it tried to reach the internet (a peer must stay
    /// offline: no tokenizer or model downloads).
    pub fn online_attempts(&self) -> Vec<String> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("huggingface.co") || l.contains("downloading") || l.contains("https://")
            })
            .map(|l| l.chars().take(200).collect())
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.envoys.clear();
    }
}

/// Starts `target` in front of `pods` (`ip:port` each). `Err` is the reason it cannot run here
/// (recorded as skipped).
pub fn start(target: &str, pods: &[String], env: &Env, tag: &str) -> Result<Running, String> {
    let target = target.strip_suffix("-below-saturation").unwrap_or(target);
    let urls: Vec<String> = pods.iter().map(|a| format!("http://{a}")).collect();
    let log = env.log_dir.join(format!("{tag}-{target}.log"));
    match target {
        "envoy-round-robin" | "envoy-least-request" => {
            let mut config = EnvoyConfig::new(pods.to_vec());
            config.module = false;
            config.plain_lb_policy = if target == "envoy-round-robin" {
                "ROUND_ROBIN"
            } else {
                "LEAST_REQUEST"
            };
            config.concurrency = env.envoy_concurrency;
            start_envoy(&config)
        }
        t if module_config(t).is_some() => {
            let mut config = EnvoyConfig::new(pods.to_vec())
                .filter_config(module_config(t).expect("module target"));
            if let Some((Profile::Precise, _)) = replicas(t) {
                config = config.pool_config(env.precise_pool.as_deref().map_err(|e| e.clone())?);
            }
            config.concurrency = env.envoy_concurrency;
            let mut running = start_envoy(&config)?;
            for _ in 1..replicas(t).map_or(1, |(_, n)| n) {
                let more = start_envoy(&config)?;
                running.urls.extend(more.urls.iter().cloned());
                running.envoys.extend(take_envoys(more));
            }
            Ok(running)
        }
        "sglang-cache-aware" | "sglang-round-robin" => {
            let python = env.router_venv.join("bin/python");
            check_import(&python, "sglang_router")?;
            let policy = target
                .strip_prefix("sglang-")
                .expect("sglang target")
                .replace('-', "_");
            let (port, metrics_port) = (free_port()?, free_port()?);
            let mut cmd = Command::new(&python);
            cmd.args(["-m", "sglang_router.launch_router", "--worker-urls"])
                .args(&urls)
                .args([
                    "--policy",
                    &policy,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                ])
                .args([
                    "--prometheus-host",
                    "127.0.0.1",
                    "--prometheus-port",
                    &metrics_port.to_string(),
                ]);
            start_process(cmd, port, &log)
        }
        "vllm-router" => {
            let bin = env.router_venv.join("bin/vllm-router");
            if !bin.is_file() {
                return Err(format!(
                    "vllm-router==0.1.17 is not installed ({} missing)",
                    bin.display()
                ));
            }
            let (port, metrics_port) = (free_port()?, free_port()?);
            let mut cmd = Command::new(&bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--prometheus-port",
                    &metrics_port.to_string(),
                    "--worker-urls",
                ])
                .args(&urls)
                // Its prefix-aware policy (renders and tokenizes through the pods).
                .args(["--policy", "cache_aware"]);
            start_process(cmd, port, &log)
        }
        other => Err(format!("unknown target {other:?}")),
    }
}

fn start_envoy(config: &EnvoyConfig) -> Result<Running, String> {
    let envoy = Envoy::try_start(config)
        .map_err(|log| format!("Envoy did not start: {}", why_not_started(&log)))?;
    Ok(Running {
        urls: vec![envoy.url.clone()],
        envoys: vec![envoy],
        child: None,
        log: None,
    })
}

/// The error lines of a log from an Envoy that did not start, without their timestamps and
/// source locations (else its last lines).
fn why_not_started(log: &str) -> String {
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("][error][") || l.contains("][critical]["))
        .map(|l| l.rsplit_once("] ").map_or(l, |(_, message)| message).trim())
        .collect();
    if errors.is_empty() {
        log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
    } else {
        errors.join("; ")
    }
}

fn take_envoys(mut running: Running) -> Vec<Envoy> {
    std::mem::take(&mut running.envoys)
}

fn check_import(python: &Path, module: &str) -> Result<(), String> {
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!("{module} is not installed in {}", python.display()))
    }
}

/// Starts a router process (offline: no Hugging Face access, loopback only) and waits until it
/// answers `GET /v1/models` with 200.
fn start_process(mut cmd: Command, port: u16, log: &Path) -> Result<Running, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = cmd
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out)
        .spawn()
        .map_err(|e| format!("cannot start router: {e}"))?;
    let mut running = Running {
        urls: vec![format!("http://127.0.0.1:{port}")],
        envoys: Vec::new(),
        child: Some(child),
        log: Some(log.to_path_buf()),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(Ok(Some(status))) = running.child.as_mut().map(|c| c.try_wait()) {
            return Err(format!("router exited with {status}: {}", tail(log)));
        }
        let ready = ureq::get(&format!("{}/v1/models", running.urls[0]))
            .timeout(Duration::from_secs(2))
            .call()
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return Ok(running);
        }
        if Instant::now() > deadline {
            return Err(format!("router not ready after 60 s: {}", tail(log)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_is_explained_by_envoys_error_lines() {
        let log = "[2026-12-02 05:39:03.026][4188][info][main] [source/server/server.cc:1] starting\n\
            [2026-12-02 05:39:03.081][4188][error][dynamic_modules] [:] lb_policy_config: unknown field `kv_events`\n\
            [2026-12-02 05:39:03.082][4188][critical][main] [source/server/server.cc:449] error initializing config\n\
            [2026-12-02 05:39:03.083][4188][info][main] [source/server/server.cc:1159] exiting";
        assert_eq!(
            why_not_started(log),
            "lb_policy_config: unknown field `kv_events`; error initializing config"
        );
        assert_eq!(why_not_started("a\nb"), "b / a");
    }

    #[test]
    fn replica_targets_name_their_profile_and_count() {
        assert_eq!(replicas("module-default-x4"), Some((Profile::Default, 4)));
        assert_eq!(replicas("module-precise-x1"), Some((Profile::Precise, 1)));
        assert_eq!(replicas("module-precise-x0"), None);
        assert_eq!(replicas("module-default"), None);
        assert!(known("module-precise-x4") && !known("module-precise"));
        assert_eq!(module_config("module-precise-x2"), Some(PRECISE_CONFIG));
        let config: serde_json::Value = serde_json::from_str(PRECISE_CONFIG).unwrap();
        assert_eq!(
            config["scheduler"]["profiles"]["precise"]["scorers"][2]["type"],
            "precise-prefix"
        );
    }
}
