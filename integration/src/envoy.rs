//! A real Envoy 1.40 process with the module loaded, on ports the OS picked.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::paths;

/// What to put in the generated Envoy config.
pub struct EnvoyConfig {
    /// `ip:port` of each member of the `inference_pool` cluster.
    pub endpoints: Vec<String>,
    /// The HTTP filter's JSON config.
    pub filter_config: String,
    /// Extra lines for the cluster (indented for its level), e.g. health checks.
    pub cluster_extra: String,
    pub concurrency: usize,
    /// Whether the module is loaded (filter + LB policy); without it, plain Envoy with
    /// `plain_lb_policy`, the baseline for overhead measurements and benchmarks.
    pub module: bool,
    /// Envoy's own load-balancing policy when `module` is false (`ROUND_ROBIN`,
    /// `LEAST_REQUEST`, ...).
    pub plain_lb_policy: &'static str,
    /// Members come from a file-based EDS source (replace them with `Envoy::set_endpoints`)
    /// instead of a static list.
    pub eds: bool,
    /// The listener comes from a file-based LDS source (replace it with
    /// `Envoy::reload_filter_config`) instead of the static config.
    pub lds: bool,
    /// The cluster's `lb_policy_config` (the pool's settings) as JSON; empty for defaults.
    pub pool_config: String,
    /// The route's `per_try_timeout`: how long an attempt may wait for its first byte.
    pub first_byte_timeout: String,
}

impl EnvoyConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EnvoyConfig {
            endpoints,
            filter_config: "{}".into(),
            cluster_extra: String::new(),
            concurrency: 2,
            module: true,
            plain_lb_policy: "ROUND_ROBIN",
            eds: false,
            lds: false,
            pool_config: String::new(),
            first_byte_timeout: "30s".into(),
        }
    }

    pub fn pool_config(mut self, json: &str) -> Self {
        self.pool_config = json.into();
        self
    }

    pub fn filter_config(mut self, json: &str) -> Self {
        self.filter_config = json.into();
        self
    }

    /// The `gateway` listener's fields after its name, indented for a list item at 4 spaces
    /// (as under `static_resources.listeners`, and as in an LDS file's `resources`).
    fn listener(&self) -> String {
        let filter_config = serde_json::to_string(&self.filter_config).unwrap();
        let first_byte_timeout = &self.first_byte_timeout;
        let module_filter = format!(
            r#"                  - name: envoy.filters.http.dynamic_modules
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
                      dynamic_module_config: {{ name: inference_scheduler, metrics_namespace: inference_scheduler }}
                      filter_name: inference-scheduler
                      filter_config:
                        "@type": type.googleapis.com/google.protobuf.StringValue
                        value: {filter_config}
"#
        );
        let module_filter = if self.module {
            module_filter.as_str()
        } else {
            ""
        };
        format!(
            r#"      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: gateway
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route:
                            cluster: inference_pool
                            timeout: 0s
                            retry_policy:
                              retry_on: connect-failure,refused-stream,reset,5xx
                              num_retries: 2
                              per_try_timeout: {first_byte_timeout}
                              retry_host_predicate:
                                - name: envoy.retry_host_predicates.previous_hosts
                                  typed_config:
                                    "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                              host_selection_retry_max_attempts: 5
                http_filters:
{module_filter}                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
        )
    }

    fn yaml(
        &self,
        eds_path: Option<&std::path::Path>,
        lds_path: Option<&std::path::Path>,
    ) -> String {
        let endpoints: String = self
            .endpoints
            .iter()
            .map(|e| {
                let (ip, port) = e.rsplit_once(':').expect("endpoint is ip:port");
                format!(
                    "              - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }}\n"
                )
            })
            .collect();
        let pool_config = serde_json::to_string(&self.pool_config).unwrap();
        let module_policy = format!(
            r#"      load_balancing_policy:
        policies:
          - typed_extension_config:
              name: envoy.load_balancing_policies.dynamic_modules
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.dynamic_modules.v3.DynamicModulesLoadBalancerConfig
                dynamic_module_config: {{ name: inference_scheduler }}
                lb_policy_name: inference-scheduler
                lb_policy_config:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {pool_config}
"#
        );
        let membership = match &eds_path {
            Some(path) => format!(
                "      type: EDS\n      eds_cluster_config:\n        eds_config:\n          resource_api_version: V3\n          path_config_source: {{ path: {} }}\n",
                path.display()
            ),
            None => format!(
                "      type: STATIC\n      load_assignment:\n        cluster_name: inference_pool\n        endpoints:\n          - lb_endpoints:\n{endpoints}"
            ),
        };
        let plain_policy = format!("      lb_policy: {}\n", self.plain_lb_policy);
        let resilience = RESILIENCE;
        let policy = match self.module {
            true => module_policy.as_str(),
            false => plain_policy.as_str(),
        };
        let listeners = match lds_path {
            Some(path) => format!(
                "dynamic_resources:\n  lds_config:\n    resource_api_version: V3\n    path_config_source: {{ path: {} }}\n",
                path.display()
            ),
            None => format!("  listeners:\n    - name: gateway\n{}", self.listener()),
        };
        let (dynamic, static_listeners) = match lds_path {
            Some(_) => (listeners.as_str(), ""),
            None => ("", listeners.as_str()),
        };
        format!(
            r#"stats_flush_interval: 1s
node: {{ id: test-gateway, cluster: test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
{dynamic}static_resources:
{static_listeners}  clusters:
    - name: inference_pool
      connect_timeout: 0.5s
{resilience}{cluster_extra}{policy}{membership}"#,
            cluster_extra = self.cluster_extra,
        )
    }

    /// An LDS file holding the `gateway` listener.
    fn lds(&self) -> String {
        format!(
            "version_info: \"{:?}\"\nresources:\n    - \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n      name: gateway\n{}",
            std::time::SystemTime::now(),
            self.listener()
        )
    }
}

/// The cluster settings envoy.yaml ships so that faults cost no request: retries never run out
/// under concurrency (a retry budget instead of the default 3 concurrent retries) and a pod
/// answering 5xx is ejected (outlier detection).
const RESILIENCE: &str = r#"      circuit_breakers:
        thresholds:
          - priority: DEFAULT
            retry_budget: { budget_percent: { value: 100.0 }, min_retry_concurrency: 64 }
      outlier_detection:
        consecutive_5xx: 5
        interval: 1s
        base_ejection_time: 10s
        max_ejection_percent: 50
"#;

/// A running Envoy; killed on drop. Its log is printed if a test panics while it runs.
pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:port` of the gateway listener.
    pub url: String,
    /// `http://127.0.0.1:port` of the admin interface.
    pub admin_url: String,
}

impl Envoy {
    /// Starts Envoy and waits until it serves. Panics with Envoy's log if it does not start.
    pub fn start(config: &EnvoyConfig) -> Envoy {
        match Self::try_start(config) {
            Ok(envoy) => envoy,
            Err(log) => panic!("Envoy did not start:\n{log}"),
        }
    }

    /// Starts Envoy; `Err` carries its log when it exits or never becomes ready.
    pub fn try_start(config: &EnvoyConfig) -> Result<Envoy, String> {
        Self::try_start_edited(config, |yaml| yaml)
    }

    /// Starts Envoy on what `edit` makes of the generated config (e.g. [`strict_dns`]
    /// membership); `Err` carries its log when it exits or never becomes ready.
    pub fn try_start_edited(
        config: &EnvoyConfig,
        edit: impl FnOnce(String) -> String,
    ) -> Result<Envoy, String> {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("envoy.yaml");
        let eds_path = config.eds.then(|| dir.path().join("eds.yaml"));
        if let Some(path) = &eds_path {
            write_eds(path, &config.endpoints);
        }
        let lds_path = config.lds.then(|| dir.path().join("lds.yaml"));
        if let Some(path) = &lds_path {
            write_atomically(path, &config.lds());
        }
        std::fs::write(
            &config_path,
            edit(config.yaml(eds_path.as_deref(), lds_path.as_deref())),
        )
        .unwrap();
        let admin_path = dir.path().join("admin.txt");
        let log_path = dir.path().join("envoy.log");
        let child = Command::new(paths::envoy_binary())
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--concurrency")
            .arg(config.concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--log-level")
            .arg("info")
            .arg("--log-path")
            .arg(&log_path)
            // Tests read the log while Envoy runs.
            .arg("--file-flush-interval-msec")
            .arg("100")
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", paths::module_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child,
            dir,
            url: String::new(),
            admin_url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("envoy exited with {status}\n{}", envoy.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("envoy not ready after 20 s\n{}", envoy.log()));
            }
            if let Some(url) = envoy.discover_listener(&admin_path) {
                envoy.url = url;
                return Ok(envoy);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Once admin answers `/ready`, the listener's bound address from `/listeners`.
    fn discover_listener(&mut self, admin_path: &PathBuf) -> Option<String> {
        let admin = std::fs::read_to_string(admin_path).ok()?;
        self.admin_url = format!("http://{}", admin.trim());
        let ready = ureq::get(&format!("{}/ready", self.admin_url))
            .call()
            .ok()?;
        if ready.status() != 200 {
            return None;
        }
        let listeners = ureq::get(&format!("{}/listeners?format=json", self.admin_url))
            .call()
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&listeners.into_string().ok()?).ok()?;
        let sock = &v["listener_statuses"][0]["local_address"]["socket_address"];
        Some(format!(
            "http://{}:{}",
            sock["address"].as_str()?,
            sock["port_value"].as_u64()?
        ))
    }

    /// Replaces the listener (an `lds` config only) by one whose filter config is `config`'s,
    /// and waits until Envoy applied it and the new listener serves.
    pub fn reload_listener(&mut self, config: &EnvoyConfig) {
        let applied = self.stat("listener_manager.lds.update_success");
        write_atomically(&self.dir.path().join("lds.yaml"), &config.lds());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.stat("listener_manager.lds.update_success") <= applied {
            assert!(
                Instant::now() < deadline,
                "the new listener was not applied:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let admin_path = self.dir.path().join("admin.txt");
        while self.discover_listener(&admin_path).is_none() {
            assert!(
                Instant::now() < deadline,
                "no listener after the reload:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.url = self.discover_listener(&admin_path).unwrap();
    }

    /// Replaces the EDS members (an `eds` config only); Envoy picks the change up by itself.
    pub fn set_endpoints(&self, endpoints: &[String]) {
        write_eds(&self.dir.path().join("eds.yaml"), endpoints);
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("envoy.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// A counter or gauge from the admin `/stats` endpoint (0 when absent).
    pub fn stat(&self, name: &str) -> u64 {
        let url = format!(
            "{}/stats?filter=^{}$",
            self.admin_url,
            name.replace('.', "\\.")
        );
        let body = ureq::get(&url)
            .call()
            .map(|r| r.into_string().unwrap_or_default())
            .unwrap_or_default();
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Whether the admin `/ready` endpoint answers 200.
    pub fn ready(&self) -> bool {
        ureq::get(&format!("{}/ready", self.admin_url))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }

    /// Whether the Envoy process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- envoy log ----\n{}", self.log());
        }
    }
}

/// Envoy's validate mode on the config at `path`, with the module loaded as the tests load it
/// (Envoy builds the module's filter and pool configs too): whether it passed, and its log.
pub fn validate_config(path: &std::path::Path) -> (bool, String) {
    let output = Command::new(paths::envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(path)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", paths::module_dir())
        .output()
        .expect("run envoy --mode validate");
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), log)
}

/// Writes the EDS file atomically (a rename, which is what Envoy's file watch follows).
fn write_eds(path: &std::path::Path, endpoints: &[String]) {
    let lb_endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|e| {
            let (ip, port) = e.rsplit_once(':').expect("endpoint is ip:port");
            serde_json::json!({"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port.parse::<u16>().unwrap()}}}})
        })
        .collect();
    let doc = serde_json::json!({
        "version_info": format!("{:?}", std::time::SystemTime::now()),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": "inference_pool",
            "endpoints": [{"lb_endpoints": lb_endpoints}],
        }],
    });
    write_atomically(path, &serde_json::to_string_pretty(&doc).unwrap());
}

/// Replaces `path` by a rename, which is what Envoy's file watch follows.
fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Turns a generated config's static pool (`EnvoyConfig::eds` false) into a `STRICT_DNS` one:
/// every A record of `name` is a member on `port`, `name` is resolved by the DNS server at
/// `resolver` only, every `refresh_ms` whatever the records' TTL.
pub fn strict_dns(
    yaml: String,
    name: &str,
    port: u16,
    resolver: std::net::SocketAddr,
    refresh_ms: u64,
) -> String {
    const STATIC: &str = "      type: STATIC\n";
    // The membership is the last part of the generated config.
    let at = yaml
        .find(STATIC)
        .expect("a config with a static pool (EnvoyConfig::eds false)");
    format!(
        r#"{head}      cluster_type:
        name: envoy.cluster.strict_dns
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster
          dns_refresh_rate: {refresh_s}s
          respect_dns_ttl: false
          dns_lookup_family: V4_ONLY
          typed_dns_resolver_config:
            name: envoy.network.dns_resolver.cares
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
              resolvers: [{{ socket_address: {{ address: {ip}, port_value: {resolver_port} }} }}]
              use_resolvers_as_fallback: false
              dns_resolver_options: {{ no_default_search_domain: true }}
      load_assignment:
        cluster_name: inference_pool
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {name}, port_value: {port} }} }} }}
"#,
        head = &yaml[..at],
        ip = resolver.ip(),
        resolver_port = resolver.port(),
        refresh_s = refresh_ms as f64 / 1000.0,
    )
}
