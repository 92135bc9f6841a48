//! Correlation: who is behind a connection. Process → cgroup → container (and pod UID) from
//! `/proc`; pod, workload, service and node from Kubernetes; trace context from records.
pub mod cgroup;
pub mod procs;
pub mod trace_context;
pub mod usage;
