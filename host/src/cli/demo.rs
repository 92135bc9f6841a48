//! `sonde demo`: the fault lab, one injected fault, and its report.
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The fault to inject: loss, bandwidth, cpu, errors, slow, slow-sql, dns.
    #[arg(long, default_value = "slow-sql")]
    fault: String,
    /// Seconds of steady load before the fault.
    #[arg(long, default_value_t = 60)]
    baseline: u64,
    /// Seconds to wait for the report.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    crate::demo::run(&args.fault, args.baseline, args.timeout)
}
