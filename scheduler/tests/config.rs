//! Config loading: defaults, and errors that name the offending field.

use scheduler::{ConfigError, Registry, Scheduler};

fn error(json: &str) -> ConfigError {
    match Scheduler::from_json(json) {
        Ok(_) => panic!("config accepted: {json}"),
        Err(e) => e,
    }
}

fn assert_error(json: &str, path: &str, message_part: &str) {
    let e = error(json);
    assert_eq!(e.path, path, "{e}");
    assert!(
        e.message.contains(message_part),
        "message {:?} lacks {message_part:?}",
        e.message
    );
    assert!(e.to_string().contains(path), "{e}");
}

#[test]
fn empty_object_is_the_default_configuration() {
    let s = Scheduler::from_json("{}").unwrap();
    assert_eq!(s.profile_names().collect::<Vec<_>>(), ["default"]);
    assert_eq!(s.headers().criticality, "x-gateway-inference-criticality");
    assert_eq!(s.headers().session, "x-session-id");
    assert_eq!(s.prefix_index().config().block_size, 64);
    assert_eq!(s.prefix_index().config().max_blocks, 256);
    assert_eq!(s.prefix_index().config().capacity_per_pod, 31_250);
}

#[test]
fn a_full_configuration_loads() {
    let json = r#"{
        "default_profile": "balanced",
        "profiles": {
            "balanced": {
                "filters": [{"type": "health"}, {"type": "stale-metrics", "parameters": {"max_age_ms": 250}},
                            {"type": "hot-spot-guard", "parameters": {"abs_threshold": 16, "rel_threshold": 2}}],
                "scorers": [{"type": "queue", "weight": 2}, {"type": "kv-cache", "weight": 2},
                            {"type": "prefix", "weight": 3}, {"type": "lora-affinity"}],
                "picker": {"type": "max-score"}
            },
            "spread": {
                "filters": [],
                "scorers": [{"type": "in-flight"}, {"type": "session-affinity", "weight": 0.5}],
                "picker": {"type": "weighted-random"}
            }
        },
        "prefix_index": {"block_size": 128, "max_blocks": 64, "capacity_per_pod": 1000, "chars_per_token": 3.5},
        "lora_adapters": ["sql-lora"],
        "headers": {"criticality": "x-priority", "session": "x-user", "profile": "x-profile"}
    }"#;
    let s = Scheduler::from_json(json).unwrap();
    assert_eq!(
        s.profile_names().collect::<Vec<_>>(),
        ["balanced", "spread"]
    );
    assert_eq!(s.headers().session, "x-user");
    assert_eq!(s.prefix_index().config().block_size, 128);
}

#[test]
fn unknown_keys_are_named() {
    assert_error(r#"{"profile": "x"}"#, "profile", "unknown field `profile`");
    assert_error(
        r#"{"profiles": {"default": {"scorers": [{"type": "queue", "wieght": 2}]}}}"#,
        "profiles.default.scorers[0].wieght",
        "unknown field `wieght`",
    );
    assert_error(
        r#"{"prefix_index": {"block_chars": 64}}"#,
        "prefix_index.block_chars",
        "unknown field",
    );
    assert_error(
        r#"{"headers": {"tenant": "x"}}"#,
        "headers.tenant",
        "unknown field",
    );
}

#[test]
fn unknown_plugins_are_named_with_the_known_ones() {
    let e = error(
        r#"{"profiles": {"default": {"scorers": [{"type": "queue"}, {"type": "latency"}]}}}"#,
    );
    assert_eq!(e.path, "profiles.default.scorers[1].type");
    assert!(e.message.contains("unknown scorer \"latency\""), "{e}");
    assert!(
        e.message.contains("kv-cache") && e.message.contains("prefix"),
        "{e}"
    );
    assert_error(
        r#"{"profiles": {"default": {"filters": [{"type": "healthy"}], "scorers": [{"type": "queue"}]}}}"#,
        "profiles.default.filters[0].type",
        "unknown filter \"healthy\"",
    );
    assert_error(
        r#"{"profiles": {"default": {"scorers": [{"type": "queue"}], "picker": {"type": "random"}}}}"#,
        "profiles.default.picker.type",
        "unknown picker \"random\"",
    );
}

#[test]
fn bad_values_are_named() {
    let scorers = |s: &str| format!(r#"{{"profiles": {{"default": {{"scorers": [{s}]}}}}}}"#);
    assert_error(
        &scorers(r#"{"type": "queue", "weight": -1}"#),
        "profiles.default.scorers[0].weight",
        "≥ 0",
    );
    assert_error(
        &scorers(r#"{"type": "queue", "weight": "high"}"#),
        "profiles.default.scorers[0].weight",
        "invalid type",
    );
    assert_error(
        r#"{"profiles": {"default": {"filters": [{"type": "stale-metrics", "parameters": {"max_age_ms": -5}}], "scorers": [{"type": "queue"}]}}}"#,
        "profiles.default.filters[0].parameters.max_age_ms",
        "invalid value",
    );
    assert_error(
        r#"{"profiles": {"default": {"filters": [{"type": "stale-metrics", "parameters": {"max_age_ms": 0}}], "scorers": [{"type": "queue"}]}}}"#,
        "profiles.default.filters[0].parameters",
        "at least 1",
    );
    assert_error(
        r#"{"profiles": {"default": {"filters": [{"type": "hot-spot-guard", "parameters": {"rel_threshold": 0.5}}], "scorers": [{"type": "queue"}]}}}"#,
        "profiles.default.filters[0].parameters",
        "rel_threshold",
    );
    assert_error(
        r#"{"profiles": {"default": {"scorers": [{"type": "prefix", "parameters": {"block_size": 32}}]}}}"#,
        "profiles.default.scorers[0].parameters.block_size",
        "unknown field",
    );
    assert_error(
        r#"{"prefix_index": {"block_size": 0}}"#,
        "prefix_index.block_size",
        "between 1 and",
    );
    assert_error(
        r#"{"prefix_index": {"max_blocks": 0}}"#,
        "prefix_index.max_blocks",
        "between 1 and",
    );
    assert_error(
        r#"{"prefix_index": {"capacity_per_pod": 0}}"#,
        "prefix_index.capacity_per_pod",
        "between 1 and",
    );
    assert_error(
        r#"{"prefix_index": {"block_size": 18446744073709551615}}"#,
        "prefix_index.block_size",
        "between 1 and",
    );
    assert_error(
        r#"{"prefix_index": {"chars_per_token": 0}}"#,
        "prefix_index.chars_per_token",
        "> 0",
    );
    assert_error(
        r#"{"headers": {"session": "X Session"}}"#,
        "headers.session",
        "header name",
    );
    assert_error(r#"{"lora_adapters": [""]}"#, "lora_adapters[0]", "empty");
    assert_error(
        r#"{"lora_adapters": "sql"}"#,
        "lora_adapters",
        "invalid type",
    );
}

#[test]
fn missing_fields_are_named() {
    assert_error(
        r#"{"profiles": {"default": {}}}"#,
        "profiles.default",
        "missing field `scorers`",
    );
    assert_error(
        r#"{"profiles": {"default": {"scorers": [{"weight": 1}]}}}"#,
        "profiles.default.scorers[0]",
        "missing field `type`",
    );
    assert_error(
        r#"{"profiles": {"default": {"scorers": []}}}"#,
        "profiles.default.scorers",
        "at least one scorer",
    );
    assert_error(
        r#"{"profiles": {"fast": {"scorers": [{"type": "queue"}]}}}"#,
        "default_profile",
        "\"default\" is not defined",
    );
}

#[test]
fn malformed_json_is_reported() {
    let e = error(r#"{"profiles": "#);
    assert!(e.to_string().contains("EOF"), "{e}");
    let e = error(r#"{} trailing"#);
    assert!(e.message.contains("trailing"), "{e}");
    let e = error("[]");
    assert!(e.message.contains("invalid type"), "{e}");
}

#[test]
fn custom_plugins_can_be_registered() {
    use scheduler::framework::{Candidate, Cycle, Scorer};
    struct Constant(f64);
    impl Scorer for Constant {
        fn name(&self) -> &'static str {
            "constant"
        }
        fn score(&self, _: &mut Cycle<'_>, _: &[Candidate<'_>], scores: &mut [Option<f64>]) {
            scores.fill(Some(self.0));
        }
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        value: f64,
    }
    let mut registry = Registry::builtin();
    registry.register_scorer("constant", |p| {
        Ok(Box::new(Constant(p.parse::<Params>()?.value)))
    });
    let json = r#"{"profiles": {"default": {"scorers": [{"type": "constant", "parameters": {"value": 0.5}}]}}}"#;
    assert!(Scheduler::from_json_with(json, &registry).is_ok());
    let json =
        r#"{"profiles": {"default": {"scorers": [{"type": "constant", "parameters": {}}]}}}"#;
    let e = Scheduler::from_json_with(json, &registry).err().unwrap();
    assert_eq!(e.path, "profiles.default.scorers[0].parameters");
    assert!(e.message.contains("missing field `value`"), "{e}");
}

#[test]
fn a_section_of_an_enclosing_config_loads_and_errors_name_the_section() {
    let filter_config: serde_json::Value = serde_json::json!({
        "max_body_bytes": 1000,
        "scheduler": {"profiles": {"default": {"scorers": [{"type": "queue", "weight": -2}]}}}
    });
    let e = Scheduler::from_value(&filter_config["scheduler"])
        .err()
        .unwrap()
        .nested_in("scheduler");
    assert_eq!(e.path, "scheduler.profiles.default.scorers[0].weight");
    assert!(Scheduler::from_value(&serde_json::Value::Null).is_ok());
    assert!(Scheduler::from_value(&serde_json::json!({"headers": {"session": "x-user"}})).is_ok());
    let e = Scheduler::from_value(&serde_json::json!({"prefix_index": {"block_size": "64"}}))
        .err()
        .unwrap();
    assert_eq!(e.path, "prefix_index.block_size");
    let e = Scheduler::from_value(&serde_json::json!([1]))
        .err()
        .unwrap()
        .nested_in("scheduler");
    assert_eq!(e.path, "scheduler");
}
