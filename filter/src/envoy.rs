//! The safe seam between our logic and Envoy. The `abi` module implements these traits over the
//! raw ABI; unit tests implement them with an in-memory fake, so filter and policy logic run
//! without Envoy.

use crate::pool::Health;

/// What the HTTP filter hooks may return for headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadersStatus {
    Continue,
    /// Hold the headers until the filter continues (returns `Continue` from a later hook).
    StopIteration,
}

/// What the HTTP filter hooks may return for body chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyStatus {
    Continue,
    /// Keep buffering; Envoy calls the body hook again with more data.
    StopIterationAndBuffer,
    /// Stop without buffering: used after we answered locally.
    StopIterationNoBuffer,
}

/// Envoy as one HTTP stream's filter sees it, valid for the duration of one hook call.
pub trait EnvoyHttpFilter {
    /// The first value of a request header (`:method`, `:path`, ...).
    fn request_header(&self, name: &str) -> Option<&[u8]>;
    fn set_request_header(&mut self, name: &str, value: &str) -> bool;
    /// The first value of a response header (`:status`, ...), in the response hooks.
    fn response_header(&self, name: &str) -> Option<&[u8]>;
    fn set_response_header(&mut self, name: &str, value: &str) -> bool;
    /// Raises the per-stream buffer limit so bodies up to `bytes` can be buffered.
    fn set_buffer_limit(&mut self, bytes: u64);
    /// Request body bytes Envoy holds for us so far (buffered plus the chunk being delivered).
    fn request_body_size(&self) -> u64;
    /// Appends every request body byte Envoy holds (buffered, then the current chunk) to `out`.
    fn read_request_body(&self, out: &mut Vec<u8>);
    /// Calls `visit` with the response body chunk being passed on, in place (response hooks).
    fn visit_response_chunk(&self, visit: &mut dyn FnMut(&[u8]));
    /// Ends the stream with a local reply.
    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8], details: &str);
    /// The cluster the matched route sends to.
    fn cluster_name(&self) -> Option<&str>;
    /// Asks Envoy to send the request to `address` (`ip:port`) itself, bypassing the cluster's
    /// load balancer; non-strict: if that host cannot be used, the load balancer decides.
    fn set_upstream_override_host(&mut self, address: &str) -> bool;
    /// `ip:port` of the upstream host that is serving the request, once one is selected.
    fn upstream_address(&self) -> Option<&str>;
    /// Adds `value` to a counter defined at config load (labels in definition order).
    fn increment_counter(&mut self, _id: usize, _labels: &[&str], _value: u64) {}
    /// Records `value` in a histogram defined at config load.
    fn record_histogram(&mut self, _id: usize, _labels: &[&str], _value: u64) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Envoy's stats as a filter config sees them: defined while the config loads, then updated
/// from the main thread.
pub trait EnvoyConfigMetrics {
    /// Defines a metric with these label names; returns its id.
    fn define(&mut self, name: &str, kind: MetricKind, labels: &[&str]) -> Result<usize, String>;
    fn set_gauge(&mut self, id: usize, labels: &[&str], value: u64);
    fn increment_counter(&mut self, id: usize, labels: &[&str], value: u64);
}

/// Envoy as one load-balancer instance sees its cluster (priority 0).
pub trait EnvoyLoadBalancer {
    fn cluster_name(&self) -> String;
    /// Number of members, healthy or not.
    fn host_count(&self) -> usize;
    /// Address (`ip:port`) of member `index` of the full host list.
    fn host_address(&self, index: usize) -> Option<String>;
    fn host_health(&self, index: usize) -> Health;
    /// Number of members Envoy considers healthy; `choose_host` answers an index into these.
    fn healthy_host_count(&self) -> usize;
    fn healthy_host_address(&self, index: usize) -> Option<String>;
}

/// One host selection request as the load balancer sees it.
pub trait EnvoyLbContext {
    /// The first value of a header of the downstream request.
    fn downstream_header(&self, name: &str) -> Option<&[u8]>;
    /// True when the retry predicates (e.g. `previous_hosts`) reject member `index` of the full
    /// host list for this attempt.
    fn should_select_another_host(&self, index: usize) -> bool;
}
