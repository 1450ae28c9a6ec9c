//! deploy/envoy-gateway: the Envoy Gateway objects render (YAML syntax, kustomize), refer to
//! each other consistently, and what they put into Envoy works with the module: an Envoy
//! config assembled the way Envoy Gateway 1.8 translates them (the filter loading the module by
//! path with the EnvoyExtensionPolicy's config, the route's cluster patched by the
//! EnvoyPatchPolicy's JSON patches) routes real requests to simulated pods with prefix affinity.
//!
//! Not checked here: the objects against Envoy Gateway's CRD schemas (they are not in
//! kubernetes-validate and no registry package ships them; see deploy/envoy-gateway/README.md),
//! and Envoy Gateway's own translation (no Envoy Gateway controller runs here).

use std::collections::HashMap;
use std::time::Duration;

use inference_sim::{spawn_pods, PodConfig};
use integration::client::{complete, eventually, prometheus};
use integration::manifests::{find, only, parse_yaml, render};
use integration::paths::module_dir;
use integration::{Envoy, EnvoyConfig};
use serde_json::{json, Value};

const ENVOY_GATEWAY: &str = "deploy/envoy-gateway";
const MODULE: &str = "libinference_scheduler.so";

fn objects() -> Vec<Value> {
    parse_yaml(&render(ENVOY_GATEWAY))
}

/// The route's cluster as Envoy Gateway names it.
fn route_cluster(route: &Value, rule: usize) -> String {
    format!(
        "httproute/{}/{}/rule/{rule}",
        route["metadata"]["namespace"].as_str().unwrap(),
        route["metadata"]["name"].as_str().unwrap()
    )
}

#[test]
fn the_envoy_gateway_objects_refer_to_each_other_and_to_the_pool() {
    let objects = objects();
    let proxy = only(&objects, "EnvoyProxy");
    let gateway = only(&objects, "Gateway");
    let route = only(&objects, "HTTPRoute");
    let extension = only(&objects, "EnvoyExtensionPolicy");
    let patch = only(&objects, "EnvoyPatchPolicy");
    for o in &objects {
        let api = o["apiVersion"].as_str().unwrap();
        assert!(
            api == "gateway.envoyproxy.io/v1alpha1" || api == "gateway.networking.k8s.io/v1",
            "{api}"
        );
    }

    // Gateway -> its class and EnvoyProxy; route and policies -> the gateway / route.
    let class = only(&objects, "GatewayClass");
    assert_eq!(
        gateway["spec"]["gatewayClassName"],
        class["metadata"]["name"]
    );
    assert_eq!(
        class["spec"]["controllerName"],
        "gateway.envoyproxy.io/gatewayclass-controller"
    );
    let parameters = &gateway["spec"]["infrastructure"]["parametersRef"];
    assert_eq!(parameters["kind"], "EnvoyProxy");
    assert_eq!(parameters["name"], proxy["metadata"]["name"]);
    assert_eq!(
        route["spec"]["parentRefs"][0]["name"],
        gateway["metadata"]["name"]
    );
    assert_eq!(extension["spec"]["targetRefs"][0]["kind"], "HTTPRoute");
    assert_eq!(
        extension["spec"]["targetRefs"][0]["name"],
        route["metadata"]["name"]
    );
    assert_eq!(
        patch["spec"]["targetRef"]["name"],
        gateway["metadata"]["name"]
    );
    let namespace = &gateway["metadata"]["namespace"];
    for o in objects.iter().filter(|o| o["kind"] != "GatewayClass") {
        assert_eq!(&o["metadata"]["namespace"], namespace, "{}", o["kind"]);
    }

    // The module: registered in the EnvoyProxy, used by name by the filter, by path by the patch,
    // the path in a volume the init container fills from the module image.
    let registered = &proxy["spec"]["dynamicModules"][0];
    let path = registered["source"]["local"]["path"].as_str().unwrap();
    assert_eq!(registered["doNotClose"], true);
    let filter = &extension["spec"]["dynamicModule"][0];
    assert_eq!(filter["name"], registered["name"]);
    assert_eq!(filter["filterName"], "inference-scheduler");
    for p in patch["spec"]["jsonPatches"].as_array().unwrap() {
        assert_eq!(p["name"], route_cluster(route, 0));
        assert_eq!(
            p["type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
    }
    let policy = &patch["spec"]["jsonPatches"][0]["operation"]["value"]["policies"][0]
        ["typed_extension_config"]["typed_config"];
    assert_eq!(
        policy["dynamic_module_config"]["module"]["local"]["filename"],
        path
    );
    let deployment = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"];
    let mount = deployment["container"]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the module's directory is mounted into Envoy");
    let init = &deployment["initContainers"][0];
    let init_mount = init["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == mount["name"])
        .expect("the init container writes that volume");
    assert_eq!(
        init["command"],
        json!([
            "cp",
            format!("/modules/{MODULE}"),
            format!("{}/", init_mount["mountPath"].as_str().unwrap())
        ])
    );
    assert!(path.ends_with(MODULE));
    let image = deployment["container"]["image"].as_str().unwrap();
    assert!(
        image.contains("v1.40"),
        "the module needs Envoy 1.40: {image}"
    );

    // The backend is the pool's Service of deploy/kubernetes, in the simulator overlay's
    // namespace.
    let pool = parse_yaml(&render("deploy/kubernetes/overlays/simulator"));
    let service = find(&pool, "Service", "inference-pool");
    let backend = &route["spec"]["rules"][0]["backendRefs"][0];
    assert_eq!(backend["name"], service["metadata"]["name"]);
    assert_eq!(backend["port"], service["spec"]["ports"][0]["port"]);
    assert_eq!(namespace, &service["metadata"]["namespace"]);
}

/// Applies an `add` or `replace` JSON patch operation (RFC 6902) at `path`.
fn apply(doc: &mut Value, op: &Value) {
    let path = op["path"].as_str().unwrap();
    let (parent, key) = path.rsplit_once('/').unwrap();
    let parent = doc.pointer_mut(parent).unwrap_or_else(|| panic!("{path}"));
    let map = parent.as_object_mut().unwrap();
    match op["op"].as_str().unwrap() {
        "replace" => assert!(map.contains_key(key), "replace needs {path} to exist"),
        "add" => {}
        other => panic!("unexpected op {other}"),
    }
    map.insert(key.to_owned(), op["value"].clone());
}

/// Replaces the module's path in the cluster (the container's) with the built module's.
fn use_built_module(value: &mut Value, container_path: &str) {
    match value {
        Value::String(s) if s == container_path => {
            *s = module_dir().join(MODULE).display().to_string();
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| use_built_module(v, container_path)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| use_built_module(v, container_path)),
        _ => {}
    }
}

/// The Envoy config Envoy Gateway 1.8 makes of these objects, reduced to what matters here:
/// its cluster for the route (EDS there, static here; least-request policy, empty
/// common_lb_config) with the EnvoyPatchPolicy applied, and the filter its translator builds
/// from the EnvoyExtensionPolicy (module by path, no metrics namespace, the config as a
/// StringValue of its JSON).
fn envoy_gateway_like_config(objects: &[Value], pods: &[String]) -> String {
    let route = only(objects, "HTTPRoute");
    let proxy = only(objects, "EnvoyProxy");
    let extension = only(objects, "EnvoyExtensionPolicy");
    let patch = only(objects, "EnvoyPatchPolicy");
    let registered = &proxy["spec"]["dynamicModules"][0];
    let path = registered["source"]["local"]["path"].as_str().unwrap();
    let filter = &extension["spec"]["dynamicModule"][0];
    let cluster_name = route_cluster(route, 0);

    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| {
            let (ip, port) = p.rsplit_once(':').unwrap();
            json!({"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port.parse::<u16>().unwrap()}}}})
        })
        .collect();
    let mut cluster = json!({
        "name": cluster_name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "common_lb_config": {},
        "load_balancing_policy": {"policies": [{"typed_extension_config": {
            "name": "envoy.load_balancing_policies.least_request",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest"}
        }}]},
        "load_assignment": {"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": endpoints}]},
    });
    for p in patch["spec"]["jsonPatches"].as_array().unwrap() {
        assert_eq!(p["name"], cluster_name);
        apply(&mut cluster, &p["operation"]);
    }
    use_built_module(&mut cluster, path);

    let mut module_filter = json!({
        "name": format!("envoy.filters.http.dynamic_modules/{}", filter["name"].as_str().unwrap()),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {
                "module": {"local": {"filename": path}},
                "do_not_close": registered["doNotClose"],
            },
            "filter_name": filter["filterName"],
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": filter["config"].to_string(),
            },
        },
    });
    use_built_module(&mut module_filter, path);

    let retry = &only(objects, "BackendTrafficPolicy")["spec"]["retry"];
    let triggers: Vec<&str> = retry["retryOn"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "http",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http",
                        "route_config": {"virtual_hosts": [{
                            "name": "inference",
                            "domains": ["*"],
                            "routes": [{
                                "match": {"prefix": "/v1"},
                                "route": {
                                    "cluster": cluster_name,
                                    "timeout": "0s",
                                    "retry_policy": {
                                        "retry_on": triggers.join(","),
                                        "num_retries": retry["numRetries"],
                                        "retry_host_predicate": [{
                                            "name": "envoy.retry_host_predicates.previous_hosts",
                                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
                                        }],
                                    },
                                },
                            }],
                        }]},
                        "http_filters": [module_filter, {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }],
                    },
                }]}],
            }],
            "clusters": [cluster],
        },
    })
    .to_string()
}

#[test]
fn the_module_configured_as_envoy_gateway_would_routes_with_prefix_affinity() {
    let objects = objects();
    let sim = spawn_pods(
        PodConfig {
            time_scale: 0.02,
            ..PodConfig::default()
        },
        3,
    )
    .unwrap();
    let pods: Vec<String> = sim.addrs().iter().map(ToString::to_string).collect();
    let config = envoy_gateway_like_config(&objects, &pods);
    // JSON is YAML: Envoy reads it as its config file.
    let envoy = Envoy::try_start_edited(&EnvoyConfig::new(pods.clone()), |_| config)
        .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));

    let mut homes: HashMap<usize, String> = HashMap::new();
    for group in 0..6 {
        let system: String = (0..60).map(|w| format!("group{group} word{w} ")).collect();
        for question in 0..3 {
            let (status, pod) = complete(&envoy.url, &format!("{system} Question {question}?"), 1);
            assert_eq!(status, 200);
            // The destination header: the filter chose the pod, from the LB policy's pool.
            let pod = pod.expect("the module named the pod");
            assert!(pods.contains(&pod), "{pod}");
            let home = homes.entry(group).or_insert_with(|| pod.clone());
            assert_eq!(*home, pod, "group {group} split");
        }
    }
    let used: std::collections::HashSet<&String> = homes.values().collect();
    assert!(used.len() > 1, "every group on one pod: {homes:?}");

    // Without `metrics_namespace` (Envoy Gateway sets none) the module's metrics carry Envoy's
    // default prefix for dynamic modules.
    let mut text = String::new();
    eventually("the module's metrics", Duration::from_secs(5), || {
        text = prometheus(&envoy.admin_url);
        text.contains("dynamicmodulescustom_decisions_total")
    });
    let decisions: f64 = text
        .lines()
        .filter(|l| l.starts_with("envoy_dynamicmodulescustom_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(decisions, 18.0, "{text}");
}
