//! The load-balancing policy's hooks and the safe handles over Envoy's `lb_*` callbacks.

use super::callbacks::*;
use super::types::*;
use crate::envoy::{EnvoyLbContext, EnvoyLoadBalancer};
use crate::lb_policy::LbPolicy;
use crate::logging::{log, Level};
use crate::panic_guard::catch;
use crate::pool::{Health, Pool};
use crate::pool_config::PoolConfig;
use std::sync::Arc;

/// The policy name envoy.yaml must give (`lb_policy_name`).
const POLICY_NAME: &[u8] = b"inference-scheduler";

/// Priority 0 is the only one the pool uses.
const PRIORITY: u32 = 0;

/// # Safety
/// `buf` must be a buffer Envoy filled during the current hook.
unsafe fn envoy_string(buf: &EnvoyBuffer) -> Option<String> {
    (!buf.ptr.is_null()).then(|| {
        // SAFETY: the caller vouches that `buf` describes bytes Envoy keeps alive for this hook.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr.cast::<u8>(), buf.length) };
        String::from_utf8_lossy(bytes).into_owned()
    })
}

struct Lb(EnvoyPtr);

impl EnvoyLoadBalancer for Lb {
    fn cluster_name(&self) -> String {
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: `self.0` is the live LB pointer of this hook; we copy the name out.
        unsafe {
            envoy_dynamic_module_callback_lb_get_cluster_name(self.0, &mut buf);
            envoy_string(&buf).unwrap_or_default()
        }
    }

    fn host_count(&self) -> usize {
        // SAFETY: plain query on the live LB pointer.
        unsafe { envoy_dynamic_module_callback_lb_get_hosts_count(self.0, PRIORITY) }
    }

    fn host_address(&self, index: usize) -> Option<String> {
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: as in `cluster_name`.
        unsafe {
            if !envoy_dynamic_module_callback_lb_get_host_address(self.0, PRIORITY, index, &mut buf)
            {
                return None;
            }
            envoy_string(&buf)
        }
    }

    fn host_health(&self, index: usize) -> Health {
        // SAFETY: plain query on the live LB pointer.
        match unsafe { envoy_dynamic_module_callback_lb_get_host_health(self.0, PRIORITY, index) } {
            HOST_UNHEALTHY => Health::Unhealthy,
            HOST_DEGRADED => Health::Degraded,
            _ => Health::Healthy,
        }
    }

    fn healthy_host_count(&self) -> usize {
        // SAFETY: plain query on the live LB pointer.
        unsafe { envoy_dynamic_module_callback_lb_get_healthy_hosts_count(self.0, PRIORITY) }
    }

    fn healthy_host_address(&self, index: usize) -> Option<String> {
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: as in `cluster_name`.
        unsafe {
            if !envoy_dynamic_module_callback_lb_get_healthy_host_address(
                self.0, PRIORITY, index, &mut buf,
            ) {
                return None;
            }
            envoy_string(&buf)
        }
    }
}

/// One host selection: the LB pointer and the request's context (which Envoy may pass as null).
struct Context {
    lb: EnvoyPtr,
    context: EnvoyPtr,
}

impl EnvoyLbContext for Context {
    fn downstream_header(&self, name: &str) -> Option<&[u8]> {
        if self.context.is_null() {
            return None;
        }
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: the context is valid for this `choose_host` call, which bounds `&self`.
        unsafe {
            let found = envoy_dynamic_module_callback_lb_context_get_downstream_header(
                self.context,
                name.into(),
                &mut buf,
                0,
                std::ptr::null_mut(),
            );
            (found && !buf.ptr.is_null())
                .then(|| std::slice::from_raw_parts(buf.ptr.cast::<u8>(), buf.length))
        }
    }

    fn should_select_another_host(&self, index: usize) -> bool {
        // SAFETY: both pointers are valid for this `choose_host` call.
        !self.context.is_null()
            && unsafe {
                envoy_dynamic_module_callback_lb_context_should_select_another_host(
                    self.lb,
                    self.context,
                    PRIORITY,
                    index,
                )
            }
    }
}

/// What Envoy holds as the policy's config: the cluster's pool settings.
struct LbConfig(Arc<PoolConfig>);

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_lb_config_new(
    _config_envoy: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    // SAFETY: both buffers are valid for this call.
    let (name, config) = unsafe {
        (
            envoy_string(&name).unwrap_or_default(),
            envoy_string(&config).unwrap_or_default(),
        )
    };
    if name.as_bytes() != POLICY_NAME {
        log(
            Level::Error,
            &format!(
                "unknown lb_policy_name {name:?}: this module provides \"inference-scheduler\""
            ),
        );
        return std::ptr::null();
    }
    match catch("lb_config_new", || PoolConfig::from_json(config.as_bytes())) {
        Ok(Ok(config)) => Box::into_raw(Box::new(LbConfig(Arc::new(config)))) as ModulePtr,
        Ok(Err(e)) => {
            log(
                Level::Error,
                &format!("inference-scheduler lb_policy_config: {e}"),
            );
            std::ptr::null()
        }
        Err(_) => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_lb_config_destroy(config: ModulePtr) {
    // SAFETY: `config` came from `Box::into_raw` in lb_config_new and Envoy destroys it once.
    drop(unsafe { Box::from_raw(config as *mut LbConfig) });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_lb_new(config: ModulePtr, _lb: EnvoyPtr) -> ModulePtr {
    // SAFETY: `config` is our `LbConfig`, alive while Envoy makes instances from it.
    let config = unsafe { &*(config as *const LbConfig) };
    let policy = LbPolicy::new(Arc::clone(&config.0), Pool::scraping);
    Box::into_raw(Box::new(policy)) as ModulePtr
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_lb_destroy(module: ModulePtr) {
    // SAFETY: `module` came from `Box::into_raw` in lb_new and Envoy destroys it once.
    drop(unsafe { Box::from_raw(module as *mut LbPolicy) });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_lb_choose_host(
    lb: EnvoyPtr,
    module: ModulePtr,
    context: EnvoyPtr,
    priority: *mut u32,
    index: *mut u32,
) -> bool {
    // SAFETY: `module` is our `LbPolicy`; each instance is used by one thread at a time.
    let policy = unsafe { &mut *(module as *mut LbPolicy) };
    let ctx = Context { lb, context };
    match catch("lb_choose_host", || policy.choose_host(&ctx)) {
        Ok(Some(chosen)) => {
            // SAFETY: Envoy passes valid out-pointers.
            unsafe {
                *priority = PRIORITY;
                *index = chosen as u32;
            }
            true
        }
        Ok(None) | Err(_) => false,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_lb_on_host_membership_update(
    lb: EnvoyPtr,
    module: ModulePtr,
    _added: usize,
    _removed: usize,
) {
    // SAFETY: as in `choose_host`.
    let policy = unsafe { &mut *(module as *mut LbPolicy) };
    let _ = catch("lb_on_host_membership_update", || {
        policy.on_membership_update(&Lb(lb))
    });
}
