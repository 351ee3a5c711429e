//! podgate: a Kubernetes validating admission webhook that keeps insecure or
//! unready Pods out of a cluster.
//!
//! The data flow, one module per step:
//! [`decode`] (bytes -> lean model) -> [`extract`] (object -> pod spec and its
//! path) -> [`checks`] (pod spec -> findings) -> [`verdict`] (findings +
//! policy -> allow/deny/warn) -> [`report`] for `podgate check`, or
//! [`server`] for `podgate serve`, the HTTPS webhook. `podgate check` gets
//! its documents from [`source`]: files, and Helm charts and kustomizations
//! rendered by their own tools.
//! [`config`] holds the policy the admin sets; [`exemption`] decides which
//! of its exemption rules apply to an object at a given time; [`export`]
//! renders the policy for other enforcement points (ValidatingAdmissionPolicy);
//! [`duration`] and [`time`] read and write the standard formats (Go
//! durations, RFC 3339).

pub mod audit;
pub mod check;
pub mod checks;
pub mod cli;
pub mod config;
pub mod decode;
pub mod duration;
pub mod exemption;
pub mod export;
pub mod extract;
pub mod fix;
pub mod report;
pub mod server;
pub mod source;
pub mod time;
pub mod verdict;
