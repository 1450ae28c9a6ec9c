//! Envoy's stats callbacks behind `EnvoyConfigMetrics` (config level, main thread) and the
//! per-stream recording used by `EnvoyHttpFilter`.

use super::callbacks::*;
use super::types::{EnvoyPtr, ModuleBuffer};
use crate::envoy::{EnvoyConfigMetrics, MetricKind};

/// Labels as ABI buffers; metrics have at most one label, so this never allocates.
pub(super) struct Labels<const N: usize>([ModuleBuffer; N], usize);

pub(super) fn labels(values: &[&str]) -> Labels<2> {
    let mut out = [ModuleBuffer::from(""), ModuleBuffer::from("")];
    assert!(values.len() <= out.len(), "metrics take at most two labels");
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = ModuleBuffer::from(*value);
    }
    Labels(out, values.len())
}

impl<const N: usize> Labels<N> {
    pub(super) fn ptr(&mut self) -> *mut ModuleBuffer {
        if self.1 == 0 {
            std::ptr::null_mut()
        } else {
            self.0.as_mut_ptr()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.1
    }
}

/// The filter config's Envoy pointer: valid while the config lives; used on the main thread.
pub(super) struct ConfigMetrics(pub EnvoyPtr);

impl EnvoyConfigMetrics for ConfigMetrics {
    fn define(
        &mut self,
        name: &str,
        kind: MetricKind,
        label_names: &[&str],
    ) -> Result<usize, String> {
        let mut names = labels(label_names);
        let mut id = 0usize;
        // SAFETY: the config pointer is live during config load; Envoy copies name and labels.
        let result = unsafe {
            let define = match kind {
                MetricKind::Counter => {
                    envoy_dynamic_module_callback_http_filter_config_define_counter
                }
                MetricKind::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge,
                MetricKind::Histogram => {
                    envoy_dynamic_module_callback_http_filter_config_define_histogram
                }
            };
            define(self.0, name.into(), names.ptr(), names.len(), &mut id)
        };
        if result == 0 {
            Ok(id)
        } else {
            Err(format!("Envoy answered {result}"))
        }
    }

    fn set_gauge(&mut self, id: usize, values: &[&str], value: u64) {
        let mut l = labels(values);
        // SAFETY: called on the main thread while the config lives; labels read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_set_gauge(
                self.0,
                id,
                l.ptr(),
                l.len(),
                value,
            )
        };
    }

    fn increment_counter(&mut self, id: usize, values: &[&str], value: u64) {
        if value == 0 {
            return;
        }
        let mut l = labels(values);
        // SAFETY: as in `set_gauge`.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.0,
                id,
                l.ptr(),
                l.len(),
                value,
            )
        };
    }
}
