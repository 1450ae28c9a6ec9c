//! The Envoy config the project ships loads in Envoy 1.40 with the module: every filter and
//! pool setting in it parses (Envoy's validate mode builds the module's configs too).

use std::process::Command;

use integration::paths;

#[test]
fn envoy_yaml_validates_with_the_module_loaded() {
    let output = Command::new(paths::envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(paths::repo_root().join("envoy.yaml"))
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", paths::module_dir())
        .output()
        .expect("run envoy --mode validate");
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "envoy.yaml does not validate:\n{log}"
    );
    assert!(
        log.contains("filter config loaded"),
        "the module was not loaded:\n{log}"
    );
}

#[test]
fn a_bad_pool_setting_is_refused_naming_the_field() {
    let yaml = std::fs::read_to_string(paths::repo_root().join("envoy.yaml")).unwrap();
    let bad = yaml.replace(r#""interval_ms": 50"#, r#""interval_ms": 0"#);
    assert_ne!(
        bad, yaml,
        "envoy.yaml no longer sets pod_metrics.interval_ms"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, bad).unwrap();
    let output = Command::new(paths::envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", paths::module_dir())
        .output()
        .expect("run envoy --mode validate");
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "a zero interval was accepted:\n{log}"
    );
    assert!(log.contains("field `pod_metrics.interval_ms`"), "{log}");
}
