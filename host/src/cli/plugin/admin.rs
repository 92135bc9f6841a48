//! The plugin commands that talk to a running daemon over its admin socket.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::admin::Request;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The daemon's admin socket (`[admin] socket`).
    #[arg(long, default_value = "/run/sonde/admin.sock")]
    socket: PathBuf,
    /// Print the daemon's JSON answer.
    #[arg(long)]
    json: bool,
}

/// One admin request; prints the slots (or the JSON answer); an error answer is an error.
pub fn call(args: &AdminArgs, req: &Request) -> Result<()> {
    let answer = crate::admin::request(&args.socket, req)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if answer.ok {
        println!(
            "{:<4} {:<16} {:<10} {:<9} {:>6} {:>9}  SOURCE",
            "SLOT", "NAME", "VERSION", "STATE", "CONNS", "RECORDS"
        );
        for s in &answer.slots {
            println!(
                "{:<4} {:<16} {:<10} {:<9} {:>6} {:>9}  {}",
                s.index, s.name, s.version, s.state, s.connections, s.records, s.source
            );
        }
        if let (Some(load), Some(swap)) = (answer.load_ms, answer.swap_ms) {
            println!("loaded in {load:.1} ms, swapped in {swap:.2} ms");
        }
    }
    match (answer.ok, answer.error) {
        (true, _) => Ok(()),
        (false, e) => anyhow::bail!("{}", e.unwrap_or_else(|| "refused".into())),
    }
}
