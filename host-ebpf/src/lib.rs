//! Empty on purpose: the eBPF programs are the `sonde-ebpf` binary (src/main.rs), built for
//! the BPF target by host/capture/build.rs.
#![no_std]
