//! podgate: a Kubernetes validating admission webhook that keeps insecure or
//! unready Pods out of a cluster.
//!
//! The data flow, one module per step; the modules are declared below in
//! this order, and each uses only modules declared above it:
//!
//! 1. [`decode`]: bytes -> lean borrowed model (AdmissionReview, manifest
//!    files, API list pages).
//! 2. [`extract`]: object -> its pod spec and the spec's path (Pod, workload
//!    template, CronJob job template).
//! 3. [`checks`]: pod spec -> findings. Each check defines the rule it is
//!    configured with; [`config`] composes those rules with the exemption
//!    rules into the policy file.
//! 4. [`verdict`]: findings + policy -> allow / deny / warn, after
//!    [`exemption`] has said which exemption rules apply to the object
//!    ([`exemption::Subject`]) at the time given.
//! 5. Out: [`admission`] turns an AdmissionReview into a verdict and an
//!    answer (what is evaluated for which operation, subresource and kind);
//!    [`report`] renders verdicts for `podgate check` (documents from
//!    [`source`]: files, and Helm charts and kustomizations rendered by their
//!    own tools; the command is [`check`]); [`fix`] (`podgate fix`) writes
//!    the fixes with one obvious answer into those files; [`export`] renders
//!    the policy for other enforcement points (ValidatingAdmissionPolicy).
//! 6. The long-running commands: [`server`] (`podgate serve`, transport only:
//!    listeners, TLS, connections, handlers) and [`audit`] (`podgate audit`,
//!    a running cluster), both logging and exposing metrics through
//!    [`telemetry`]. [`cli`] parses the command line.
//!
//! [`duration`] and [`time`], declared first, read and write the standard
//! formats (Go durations, RFC 3339) every step may use.

pub mod duration;
pub mod time;

// Blank lines keep rustfmt from sorting these: the order is the flow.

pub mod decode;

pub mod extract;

pub mod checks;

pub mod config;

pub mod exemption;

pub mod verdict;

pub mod admission;

pub mod report;

pub mod source;

pub mod check;

pub mod fix;

pub mod export;

pub mod telemetry;

pub mod server;

pub mod audit;

pub mod cli;
