//! The Envoy config the project ships loads in Envoy 1.40 with the module: every filter and
//! pool setting in it parses (Envoy's validate mode builds the module's configs too).

use integration::envoy::validate_config;
use integration::paths;

#[test]
fn envoy_yaml_validates_with_the_module_loaded() {
    let (valid, log) = validate_config(&paths::repo_root().join("envoy.yaml"));
    assert!(valid, "envoy.yaml does not validate:\n{log}");
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
    let (valid, log) = validate_config(&path);
    assert!(!valid, "a zero interval was accepted:\n{log}");
    assert!(log.contains("field `pod_metrics.interval_ms`"), "{log}");
}
