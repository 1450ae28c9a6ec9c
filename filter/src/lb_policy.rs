//! The pool cluster's load-balancing policy. It applies the HTTP filter's decision (the
//! `x-gateway-destination-endpoint` request header), re-picks when a retry must avoid hosts
//! already tried, and publishes the cluster's members and health for the filter to decide among.

use std::sync::Arc;

use scheduler::rendezvous;

use crate::config::DESTINATION_HEADER;
use crate::envoy::{EnvoyLbContext, EnvoyLoadBalancer};
use crate::logging::{log, Level};
use crate::pool::{Member, Pool, PoolSnapshot};
use crate::pool_config::PoolConfig;
use crate::pools;

/// A healthy member: its address and its position in the full host list (the index Envoy's
/// retry predicates and per-host callbacks use).
#[derive(Debug)]
struct HealthyHost {
    address: String,
    full_index: usize,
}

/// Makes the pool of a cluster the first time an instance of its policy needs one.
pub type PoolFactory = fn(&str, PoolConfig) -> Result<Pool, String>;

pub struct LbPolicy {
    /// The cluster's pool settings (`lb_policy_config`).
    config: Arc<PoolConfig>,
    create_pool: PoolFactory,
    /// The cluster's pool, shared with the other instances and the filter; found or made on
    /// the first membership update (which names the cluster).
    pool: Option<Arc<Pool>>,
    /// Envoy's healthy host list, in Envoy's order: `choose_host` answers an index into it.
    healthy: Vec<HealthyHost>,
    /// Round-robin cursor for requests the filter did not schedule (e.g. `GET /v1/models`).
    next: usize,
}

impl LbPolicy {
    pub fn new(config: Arc<PoolConfig>, create_pool: PoolFactory) -> Self {
        LbPolicy {
            config,
            create_pool,
            pool: None,
            healthy: Vec::new(),
            next: 0,
        }
    }

    /// Envoy reported a membership or health change: refresh our view and publish it.
    pub fn on_membership_update(&mut self, envoy: &impl EnvoyLoadBalancer) {
        let members: Vec<Member> = (0..envoy.host_count())
            .filter_map(|i| {
                Some(Member {
                    address: envoy.host_address(i)?,
                    health: envoy.host_health(i),
                })
            })
            .collect();
        self.healthy = (0..envoy.healthy_host_count())
            .filter_map(|i| {
                let address = envoy.healthy_host_address(i)?;
                let full_index = members.iter().position(|m| m.address == address)?;
                Some(HealthyHost {
                    address,
                    full_index,
                })
            })
            .collect();
        if self.pool.is_none() {
            let cluster = envoy.cluster_name();
            match pools::acquire(&cluster, &self.config, self.create_pool) {
                Ok(pool) => self.pool = Some(pool),
                Err(e) => log(
                    Level::Error,
                    &format!(
                        "inference-scheduler: cluster {cluster:?}: cannot start its pool: {e}"
                    ),
                ),
            }
        }
        if let Some(pool) = &self.pool {
            pool.publish(PoolSnapshot { members });
        }
    }

    /// Index into the healthy host list for this attempt, or `None` when there is no healthy
    /// host (Envoy answers 503).
    pub fn choose_host(&mut self, ctx: &impl EnvoyLbContext) -> Option<usize> {
        if self.healthy.is_empty() {
            return None;
        }
        let untried = |i: &usize| !ctx.should_select_another_host(self.healthy[*i].full_index);
        let target = ctx.downstream_header(DESTINATION_HEADER);
        let Some(target) = target else {
            // Not scheduled by the filter: plain round robin over untried hosts.
            let n = self.healthy.len();
            let start = self.next;
            self.next = self.next.wrapping_add(1);
            return (0..n)
                .map(|k| (start + k) % n)
                .find(untried)
                .or(Some(start % n));
        };
        let chosen = self
            .healthy
            .iter()
            .position(|h| h.address.as_bytes() == target);
        if let Some(i) = chosen.filter(untried) {
            return Some(i);
        }
        // The chosen pod was already tried (a retry) or is no longer healthy: the next pod in
        // rendezvous order for the same key, so every replica falls back the same way.
        let best_untried = (0..self.healthy.len())
            .filter(untried)
            .max_by_key(|&i| rendezvous::weight(target, &self.healthy[i].address));
        best_untried.or(chosen).or(Some(0))
    }
}
