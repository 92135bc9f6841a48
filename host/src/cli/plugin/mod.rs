//! `sonde plugin …`: authoring tools (new, keygen, package, verify), and the running
//! daemon's parsers through its admin socket (list, load, reload, unload).
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::admin::Request;
use crate::config::Config;

pub mod admin;
pub mod new;
pub mod sign;

use admin::AdminArgs;

// The variants' doc comments are the subcommands' help texts.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Create a new plugin crate (a working example with a native test) from the template.
    New(new::PluginNewArgs),
    /// Make a publisher key pair: the secret key (mode 0600) and `<out>.pub`, the public key
    /// operators add to `[[plugins.trusted_keys]]`.
    Keygen(sign::PluginKeygenArgs),
    /// Sign a component: write `<name>-<version>.wasm` and its signed manifest
    /// `<name>-<version>.toml` (and `.tar` with --tar) into --out.
    Package(sign::PluginPackageArgs),
    /// Check components (files, or every *.wasm of directories) as the daemon would load them:
    /// manifest, sha256, signature, trusted key, world, capabilities, identity. Exit status 1 if
    /// any is refused.
    Verify(sign::PluginVerifyArgs),
    /// The running daemon's parsers: name, version, source, state, connections (admin socket).
    List(AdminArgs),
    /// Load a parser component into the running daemon.
    Load {
        /// The component (.wasm), absolute path.
        path: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Swap a running parser for a new version: new connections go to the new version, the
    /// old one finishes its own (then is retired); a component that fails to load changes
    /// nothing.
    Reload {
        /// The parser's name (`sonde plugin list`).
        name: String,
        /// The new component (default: the file it was loaded from).
        path: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop a running parser (it finishes its connections first).
    Unload {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn run(command: PluginCommand, config: &Config) -> Result<()> {
    match command {
        PluginCommand::New(args) => new::run(args),
        PluginCommand::Keygen(args) => sign::keygen(args),
        PluginCommand::Package(args) => sign::package(args),
        // Verified against the config's trusted keys, as the daemon would.
        PluginCommand::Verify(args) => sign::verify(args, &config.plugins),
        PluginCommand::List(admin) => admin::call(&admin, &Request::List),
        PluginCommand::Load { path, admin } => {
            // The daemon resolves paths from its own working directory, not ours.
            let path = std::path::absolute(&path)?;
            admin::call(&admin, &Request::Load { path })
        }
        PluginCommand::Reload { name, path, admin } => {
            let path = path.map(|p| std::path::absolute(&p)).transpose()?;
            admin::call(&admin, &Request::Reload { name, path })
        }
        PluginCommand::Unload { name, admin } => admin::call(&admin, &Request::Unload { name }),
    }
}
