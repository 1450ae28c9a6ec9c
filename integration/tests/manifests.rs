//! deploy/kubernetes: rendered by kubectl's kustomize, every object checked offline against the
//! Kubernetes schemas (`kubernetes-validate`, which ships them), the Envoy config of the
//! ConfigMap accepted by real Envoy with the module, and the preStop drain hook run against a
//! real Envoy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration::client::eventually;
use integration::envoy::validate_config;
use integration::manifests::{find, parse_yaml, render, run};
use integration::paths::{envoy_binary, repo_root};
use integration::{Backend, Envoy, EnvoyConfig, SseGate};
use serde_json::Value;

const BASE: &str = "deploy/kubernetes/base";
const SIMULATOR: &str = "deploy/kubernetes/overlays/simulator";
/// The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn venv_bin(name: &str) -> PathBuf {
    repo_root().join(".venv/bin").join(name)
}

/// The ConfigMap of the Envoy config (its name carries a content hash).
fn envoy_config(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("envoy-config-"))
        })
        .expect("the envoy-config ConfigMap")
}

/// Runs kubernetes-validate --strict on `yaml`; the output, and whether it passed.
fn validate(yaml: &str, version: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = run(Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", version])
        .arg(&file));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_rendered_object_passes_the_kubernetes_schemas() {
    for dir in [BASE, SIMULATOR] {
        let yaml = render(dir);
        let count = parse_yaml(&yaml).len();
        for version in KUBERNETES_VERSIONS {
            let (ok, report) = validate(&yaml, version);
            assert!(ok, "{dir} against {version}:\n{report}");
            assert_eq!(
                report.matches(" passed for resource ").count(),
                count,
                "{dir} against {version}: every object checked\n{report}"
            );
        }
    }
}

#[test]
fn the_schema_check_rejects_a_misspelt_field() {
    let yaml = render(BASE).replacen("readinessProbe:", "readinesProbe:", 1);
    let (ok, report) = validate(&yaml, KUBERNETES_VERSIONS[1]);
    assert!(!ok, "a misspelt field passed:\n{report}");
    assert!(report.contains("readinesProbe"), "{report}");
}

#[test]
fn the_gateway_is_replicated_spread_probed_locked_down_and_drained() {
    let objects = parse_yaml(&render(BASE));
    let deployment = find(&objects, "Deployment", "inference-gateway");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    assert!(pod["topologySpreadConstraints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
            && c["labelSelector"]["matchLabels"]["app.kubernetes.io/name"]
                == labels["app.kubernetes.io/name"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let envoy = &pod["containers"][0];
    assert_eq!(envoy["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(envoy["securityContext"]["allowPrivilegeEscalation"], false);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                envoy["resources"][kind][resource].is_string(),
                "{kind}.{resource}"
            );
        }
    }
    let health_port = envoy["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "health")
        .unwrap()["containerPort"]
        .clone();
    assert_eq!(
        health_port, 19001,
        "the port of envoy.yaml's health listener"
    );
    assert_eq!(envoy["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(envoy["readinessProbe"]["httpGet"]["port"], "health");
    assert_eq!(envoy["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(
        envoy["lifecycle"]["preStop"]["exec"]["command"],
        serde_json::json!(["/bin/bash", "/etc/envoy/drain.sh"])
    );
    // The grace period outlasts the drain hook's longest wait (DRAIN_MAX_S, 150 s, + 5 s).
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 155);
    let config_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(
        config_volume["configMap"]["name"],
        envoy_config(&objects)["metadata"]["name"]
    );

    let pdb = find(&objects, "PodDisruptionBudget", "inference-gateway");
    let service = find(&objects, "Service", "inference-gateway");
    for selector in [
        &pdb["spec"]["selector"]["matchLabels"],
        &service["spec"]["selector"],
    ] {
        for (key, value) in selector.as_object().unwrap() {
            assert_eq!(&labels[key], value, "selects the gateway pods");
        }
    }
}

#[test]
fn the_pool_is_the_headless_service_resolved_by_a_strict_dns_cluster_with_our_policy() {
    for dir in [BASE, SIMULATOR] {
        let objects = parse_yaml(&render(dir));
        let envoy = parse_yaml(
            envoy_config(&objects)["data"]["envoy.yaml"]
                .as_str()
                .unwrap(),
        );
        let clusters = envoy[0]["static_resources"]["clusters"].as_array().unwrap();
        let pool = clusters
            .iter()
            .find(|c| c["name"] == "inference_pool")
            .unwrap();
        let dns = &pool["cluster_type"];
        assert_eq!(dns["name"], "envoy.cluster.strict_dns");
        assert_eq!(dns["typed_config"]["respect_dns_ttl"], false);
        assert_eq!(
            pool["load_balancing_policy"]["policies"][0]["typed_extension_config"]["typed_config"]
                ["lb_policy_name"],
            "inference-scheduler"
        );
        let address = &pool["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ["address"]["socket_address"];

        let service = find(&objects, "Service", address["address"].as_str().unwrap());
        assert_eq!(service["spec"]["clusterIP"], "None", "{dir}: headless");
        let port = &service["spec"]["ports"][0];
        assert_eq!(port["port"], address["port_value"]);
        let servers = find(&objects, "Deployment", "model-server");
        let pod_labels = &servers["spec"]["template"]["metadata"]["labels"];
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(
                &pod_labels[key], value,
                "{dir}: the Service selects the pods"
            );
        }
        let container = &servers["spec"]["template"]["spec"]["containers"][0];
        let named = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port["targetPort"])
            .unwrap();
        assert_eq!(named["containerPort"], address["port_value"]);
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    }
}

#[test]
fn the_simulator_overlay_replaces_vllm_and_needs_no_gpu() {
    let objects = parse_yaml(&render(SIMULATOR));
    let servers = find(&objects, "Deployment", "model-server");
    let container = &servers["spec"]["template"]["spec"]["containers"][0];
    assert!(container["image"]
        .as_str()
        .unwrap()
        .starts_with("inference-scheduler/inference-sim:"));
    assert!(!container["resources"]
        .to_string()
        .contains("nvidia.com/gpu"));
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["--host", "0.0.0.0", "--port", "8000"]);
    // The simulator binary takes these flags (the pod would crash-loop otherwise).
    let sim = repo_root().join("target/release/inference-sim");
    let help = run(Command::new(&sim).arg("--help"));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--host") && help.contains("--port"), "{help}");
    assert!(objects
        .iter()
        .all(|o| o["kind"] == "Namespace" || o["metadata"]["namespace"] == "inference-sim-demo"));
}

/// Writes the ConfigMap's files into a directory, as the volume mount does.
fn config_files(dir: &Path) {
    let objects = parse_yaml(&render(BASE));
    for (name, text) in envoy_config(&objects)["data"].as_object().unwrap() {
        std::fs::write(dir.join(name), text.as_str().unwrap()).unwrap();
    }
}

#[test]
fn envoy_accepts_the_configmap_config_with_the_module_loaded() {
    let dir = tempfile::tempdir().unwrap();
    config_files(dir.path());
    let (valid, log) = validate_config(&dir.path().join("envoy.yaml"));
    assert!(valid, "{log}");
    assert!(log.contains("OK"), "{log}");
    assert!(!log.contains("Deprecated field"), "{log}");

    // And without the module on the search path it is refused: the check did load it.
    let out = run(Command::new(envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(dir.path().join("envoy.yaml"))
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir.path())
        // cargo puts target/release/deps on it, where Envoy would find the module too.
        .env_remove("LD_LIBRARY_PATH"));
    assert!(!out.status.success());
}

#[test]
fn the_drain_hook_fails_readiness_and_waits_for_the_streams_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    config_files(dir.path());
    let gate = SseGate::default();
    let backend = Backend::start(gate.clone());
    let envoy = Envoy::start(&EnvoyConfig::new(vec![backend.addr.clone()]));
    assert!(envoy.ready());

    // A generation in flight: the backend holds its last event until the gate opens.
    let body = serde_json::json!({"model": "m", "prompt": "a long answer", "stream": true});
    let response = ureq::post(&format!("{}/v1/completions", envoy.url))
        .send_string(&body.to_string())
        .unwrap();
    let mut stream = BufReader::new(response.into_reader());
    let mut first = String::new();
    stream.read_line(&mut first).unwrap();

    let admin_port = envoy.admin_url.rsplit(':').next().unwrap().to_owned();
    let started = Instant::now();
    let mut hook = Command::new("bash")
        .arg(dir.path().join("drain.sh"))
        .env("ADMIN_PORT", &admin_port)
        .env("DRAIN_PROPAGATION_S", "0")
        .env("DRAIN_MAX_S", "30")
        // EnvoyConfig's listener has stat_prefix `gateway`.
        .env("DRAIN_STAT", "http.gateway.downstream_rq_active")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        "/ready answers 503 once draining",
        Duration::from_secs(5),
        || !envoy.ready(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        hook.try_wait().unwrap().is_none(),
        "the hook returned while a stream was in flight"
    );

    gate.release();
    let rest: Vec<String> = stream.lines().map(Result::unwrap).collect();
    assert!(rest.iter().any(|l| l == "data: [DONE]"), "{rest:?}");
    let out = hook.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("(active requests: 0)"), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the hook waited {:?} after the stream ended",
        started.elapsed()
    );
}
