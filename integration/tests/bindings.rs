//! Our bindings against the Envoy binary we ship with: every callback we declare or link must be
//! exported by Envoy 1.40, and our module must export every hook Envoy 1.40 resolves.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use integration::paths;

/// Hooks Envoy 1.40 refuses to load the module without (HTTP filter) or to build the cluster
/// without (load-balancing policy); established by removing each in turn (see filter/README.md).
const REQUIRED_HOOKS: &[&str] = &[
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new",
    "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_new",
    "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_request_headers",
    "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers",
    "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body",
    "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
    "envoy_dynamic_module_on_lb_config_new",
    "envoy_dynamic_module_on_lb_config_destroy",
    "envoy_dynamic_module_on_lb_new",
    "envoy_dynamic_module_on_lb_choose_host",
    "envoy_dynamic_module_on_lb_on_host_membership_update",
    "envoy_dynamic_module_on_lb_destroy",
];

fn dynamic_symbols(binary: &Path, defined: bool) -> BTreeSet<String> {
    let which = if defined {
        "--defined-only"
    } else {
        "--undefined-only"
    };
    let out = Command::new("nm")
        .arg("-D")
        .arg(which)
        .arg(binary)
        .output()
        .expect("run nm");
    assert!(out.status.success(), "nm failed on {}", binary.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect()
}

fn envoy_exports() -> BTreeSet<String> {
    let exports = dynamic_symbols(&paths::envoy_binary(), true);
    assert!(
        exports.len() > 500,
        "suspiciously few Envoy exports: {}",
        exports.len()
    );
    exports
}

fn module() -> std::path::PathBuf {
    paths::module_dir().join("libinference_scheduler.so")
}

#[test]
fn every_declared_callback_is_exported_by_envoy() {
    let source =
        std::fs::read_to_string(paths::repo_root().join("filter/src/abi/callbacks.rs")).unwrap();
    let declared: BTreeSet<&str> = source
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("envoy_dynamic_module_callback_"))
        .collect();
    assert!(declared.len() >= 10, "found only {declared:?}");
    let exports = envoy_exports();
    let missing: Vec<_> = declared.iter().filter(|d| !exports.contains(**d)).collect();
    assert!(
        missing.is_empty(),
        "declared but not exported by Envoy 1.40: {missing:?}"
    );
}

#[test]
fn every_callback_the_module_links_is_exported_by_envoy() {
    let needed: Vec<String> = dynamic_symbols(&module(), false)
        .into_iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_callback_"))
        .collect();
    assert!(
        !needed.is_empty(),
        "the module links no Envoy callback at all"
    );
    let exports = envoy_exports();
    let missing: Vec<_> = needed.iter().filter(|s| !exports.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "the module needs callbacks Envoy 1.40 lacks: {missing:?}"
    );
}

#[test]
fn the_module_exports_every_hook_envoy_requires() {
    let exported = dynamic_symbols(&module(), true);
    let missing: Vec<_> = REQUIRED_HOOKS
        .iter()
        .filter(|h| !exported.contains(**h))
        .collect();
    assert!(
        missing.is_empty(),
        "hooks missing from the module: {missing:?}"
    );
}
