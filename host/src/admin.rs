//! The admin endpoint: a Unix socket (root only, mode 0600; never TCP) through which
//! `sonde plugin list|load|unload|reload` manage the running daemon's protocol parsers.
//!
//! Protocol: one JSON request line, one JSON response line, then the connection closes.
//! A load compiles the component here, on a blocking thread, off the capture loop; only the
//! swap itself (a few vector pushes in the router) runs in the loop. A component that fails to
//! load changes nothing: the running version stays (that is the rollback).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use sonde_parse::ParserBackend;
use sonde_pipeline::router::SlotInfo;
use sonde_sandbox::PluginEngine;
use sonde_sandbox::PluginsConfig;
use sonde_sandbox::parsers::WasmParser;

/// `[admin]`: the local admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// The Unix socket (created mode 0600; only uid 0 may use it). Empty: no admin endpoint.
    pub socket: Option<PathBuf>,
    /// How long a swapped-out parser keeps its connections; after, they are handed to the
    /// new version (see `parse::router::Life`).
    pub drain_timeout_s: u64,
    /// Watch `[plugins] parser_dirs` (inotify): a component written there is loaded or
    /// swapped in, one removed is unloaded.
    pub watch_parser_dirs: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            socket: Some(PathBuf::from("/run/sonde/admin.sock")),
            drain_timeout_s: 30,
            watch_parser_dirs: true,
        }
    }
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Every parser slot: active, draining, retired.
    List,
    /// Load a new parser component (its name must not be loaded yet).
    Load { path: PathBuf },
    /// Swap the parser named `name` for the component at `path` (default: the file it was
    /// loaded from).
    Reload { name: String, path: Option<PathBuf> },
    /// Stop the parser named `name` (it finishes its connections first).
    Unload { name: String },
}

/// What the daemon answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub error: Option<String>,
    pub slots: Vec<SlotInfo>,
    /// Reading and compiling (or fetching from the cache) the component, ms.
    pub load_ms: Option<f64>,
    /// The swap in the daemon loop, ms (from the request reaching the loop to done).
    pub swap_ms: Option<f64>,
}

impl Response {
    fn error(e: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            error: Some(e.to_string()),
            ..Self::default()
        }
    }
}

/// A change the daemon loop applies to its router.
pub enum Op {
    List,
    Add(Box<dyn ParserBackend>),
    Replace {
        name: String,
        backend: Box<dyn ParserBackend>,
    },
    Unload {
        name: String,
    },
}

/// An [`Op`] and where its answer goes.
pub struct OpRequest {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Vec<SlotInfo>, String>>,
}

/// What the admin server needs to load components.
#[derive(Clone)]
pub struct Loader {
    pub engine: Arc<PluginEngine>,
    pub plugins: PluginsConfig,
}

impl Loader {
    /// Verify (manifest, signature, trusted keys or `allow_unsigned_dirs`: the same rules as
    /// `parser_dirs` at start-up) and compile a parser component, on the calling thread (a
    /// blocking one). The bytes checked are the bytes loaded.
    pub fn load(&self, path: &Path) -> Result<WasmParser> {
        let verified = sonde_sandbox::manifest::verify_parser_file(path, &self.plugins)?;
        let parser = WasmParser::load(
            self.engine.clone(),
            self.plugins.limits,
            &verified.wasm,
            &path.display().to_string(),
        )
        .with_context(|| format!("loading parser component {}", path.display()))?;
        verified.check_identity(&parser.name, &parser.version)?;
        Ok(parser)
    }
}

/// Bind the socket: parent directory 0700, socket 0600. A socket file already there is
/// removed only when proven stale (a connect to it fails); one that answers belongs to a
/// running daemon: [`AlreadyRunning`](crate::instance::AlreadyRunning) with its pid, and the
/// socket is left alone.
pub fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(live) => {
                return Err(crate::instance::AlreadyRunning {
                    pid: peer_pid(&live),
                }
                .into());
            }
            // Nobody listens: a socket left by a daemon that died.
            Err(_) => std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?,
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    tracing::info!(socket = %path.display(), "admin endpoint ready");
    Ok(listener)
}

/// The pid of the process at the other end of a Unix stream (SO_PEERCRED).
fn peer_pid(s: &std::os::unix::net::UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd as _;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our `ucred`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// Serve the admin socket until the task is dropped.
pub async fn serve(listener: UnixListener, loader: Loader, ops: mpsc::Sender<OpRequest>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (loader, ops) = (loader.clone(), ops.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, loader, ops).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

async fn handle(stream: UnixStream, loader: Loader, ops: mpsc::Sender<OpRequest>) -> Result<()> {
    // The file mode already keeps others out; the peer's credentials are checked anyway, so a
    // socket made reachable by mistake (a bind mount, a chmod) still refuses them.
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let (read, mut write) = stream.into_split();
    let response = if uid != Some(0) {
        tracing::warn!(?uid, "admin endpoint: refused a non-root client");
        Response::error(format!(
            "refused: the admin endpoint is for root only (peer uid {})",
            uid.map_or("unknown".to_string(), |u| u.to_string())
        ))
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(64 << 10));
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .context("reading the request")??;
        match serde_json::from_str::<Request>(&line) {
            Ok(req) => answer(req, &loader, &ops).await,
            Err(e) => Response::error(format!("bad request: {e}")),
        }
    };
    let mut out = serde_json::to_string(&response)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
}

async fn answer(req: Request, loader: &Loader, ops: &mpsc::Sender<OpRequest>) -> Response {
    let mut load_ms = None;
    let op = match req {
        Request::List => Op::List,
        Request::Unload { name } => Op::Unload { name },
        Request::Load { path }
        | Request::Reload {
            path: Some(path), ..
        } if !path.is_absolute() => {
            return Response::error(format!("{}: give an absolute path", path.display()));
        }
        Request::Load { path } => match compile(loader, path).await {
            Ok((p, ms)) => {
                load_ms = Some(ms);
                Op::Add(Box::new(p))
            }
            Err(e) => return Response::error(format!("{e:#}")),
        },
        Request::Reload { name, path } => {
            let path = match path {
                Some(p) => p,
                None => match source_of(&name, ops).await {
                    Some(p) => p,
                    None => {
                        return Response::error(format!(
                            "{name}: no file to reload from (embedded?); give a path"
                        ));
                    }
                },
            };
            match compile(loader, path).await {
                Ok((p, ms)) => {
                    if p.name != name {
                        return Response::error(format!(
                            "the component is {:?}, not {name:?}: refusing to swap",
                            p.name
                        ));
                    }
                    load_ms = Some(ms);
                    Op::Replace {
                        name,
                        backend: Box::new(p),
                    }
                }
                Err(e) => return Response::error(format!("{e:#}")),
            }
        }
    };
    let started = Instant::now();
    match submit(ops, op).await {
        Ok(slots) => Response {
            ok: true,
            slots,
            load_ms,
            swap_ms: Some(started.elapsed().as_secs_f64() * 1e3),
            ..Response::default()
        },
        Err(e) => Response::error(e),
    }
}

async fn compile(loader: &Loader, path: PathBuf) -> Result<(WasmParser, f64)> {
    let loader = loader.clone();
    let started = Instant::now();
    let parser = tokio::task::spawn_blocking(move || loader.load(&path))
        .await
        .context("the loading thread panicked")??;
    Ok((parser, started.elapsed().as_secs_f64() * 1e3))
}

async fn submit(ops: &mpsc::Sender<OpRequest>, op: Op) -> Result<Vec<SlotInfo>, String> {
    let (reply, answer) = oneshot::channel();
    ops.send(OpRequest { op, reply })
        .await
        .map_err(|_| "the daemon is stopping".to_string())?;
    answer
        .await
        .map_err(|_| "the daemon is stopping".to_string())?
}

/// The file the active parser `name` was loaded from, if it came from one.
async fn source_of(name: &str, ops: &mpsc::Sender<OpRequest>) -> Option<PathBuf> {
    let slots = submit(ops, Op::List).await.ok()?;
    slots
        .into_iter()
        .find(|s| s.name == name && s.state == "active" && s.source.starts_with('/'))
        .map(|s| PathBuf::from(s.source))
}

/// Apply an op to the router (in the daemon loop).
pub fn apply(router: &mut sonde_pipeline::router::Router, op: Op) -> Result<Vec<SlotInfo>, String> {
    let find = |router: &sonde_pipeline::router::Router, name: &str| {
        router
            .active_parser(name)
            .ok_or_else(|| format!("no active parser named {name:?}"))
    };
    match op {
        Op::List => {}
        Op::Add(backend) => {
            if router.active_parser(backend.name()).is_some() {
                return Err(format!(
                    "a parser named {:?} is loaded already: use reload",
                    backend.name()
                ));
            }
            let name = backend.name().to_string();
            router.add_parser(backend).map_err(|e| format!("{e:#}"))?;
            tracing::info!(parser = %name, "parser loaded");
        }
        Op::Replace { name, backend } => {
            let old = find(router, &name)?;
            let version = backend.version().to_string();
            router
                .replace_parser(old, backend)
                .map_err(|e| format!("{e:#}"))?;
            tracing::info!(parser = %name, %version, "parser swapped; the old version drains");
        }
        Op::Unload { name } => {
            let p = find(router, &name)?;
            router.unload_parser(p).map_err(|e| format!("{e:#}"))?;
            tracing::info!(parser = %name, "parser unloading; it drains");
        }
    }
    Ok(router.slots())
}

/// The client side: send `req` to the daemon at `socket`, return its answer.
pub fn request(socket: &Path, req: &Request) -> Result<Response> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the daemon's admin socket {} (is `sonde run` up, and are you root?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    // A refusal may arrive (and the daemon close) before the request is written: read the
    // answer either way, and report the write error only if there is none.
    let written = s.write_all(line.as_bytes());
    let mut answer = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut answer)
        .context("reading the daemon's answer")?;
    if answer.is_empty() {
        written.context("sending the request")?;
    }
    serde_json::from_str(&answer).with_context(|| format!("bad answer: {answer:?}"))
}

/// Watch the parser directories (inotify): a `*.wasm` written or moved in is loaded (or, if
/// a parser of its name runs, swapped in); one deleted or moved out is unloaded. Runs on a
/// thread of its own; loading happens there, off the capture loop.
pub fn watch_dirs(
    dirs: Vec<PathBuf>,
    loader: Loader,
    ops: mpsc::Sender<OpRequest>,
) -> Result<std::thread::JoinHandle<()>> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: inotify_init1 takes flags only; the descriptor is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    anyhow::ensure!(
        fd >= 0,
        "inotify_init1: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut watches = std::collections::HashMap::new();
    for dir in &dirs {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .with_context(|| format!("{}: bad path", dir.display()))?;
        let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_DELETE | libc::IN_MOVED_FROM;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
        anyhow::ensure!(
            wd >= 0,
            "watching {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        watches.insert(wd, dir.clone());
    }
    tracing::info!(dirs = ?dirs, "watching parser directories");
    let thread = std::thread::Builder::new()
        .name("sonde-plugin-watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                // SAFETY: reading into our own buffer of its length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    tracing::warn!(error = %e, "plugin directory watch ended");
                    return;
                }
                for (wd, mask, name) in inotify_events(&buf[..n as usize]) {
                    let Some(dir) = watches.get(&wd) else {
                        continue;
                    };
                    if !name.ends_with(".wasm") {
                        continue;
                    }
                    let path = dir.join(&name);
                    let gone = mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0;
                    on_file_event(&path, gone, &loader, &ops);
                }
            }
        })
        .context("starting the plugin directory watch")?;
    Ok(thread)
}

/// (watch descriptor, mask, name) of each event in an inotify read.
fn inotify_events(mut b: &[u8]) -> Vec<(i32, u32, String)> {
    let mut out = Vec::new();
    // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[len]; }
    while b.len() >= 16 {
        let wd = i32::from_ne_bytes(b[0..4].try_into().expect("4 bytes"));
        let mask = u32::from_ne_bytes(b[4..8].try_into().expect("4 bytes"));
        let len = u32::from_ne_bytes(b[12..16].try_into().expect("4 bytes")) as usize;
        let Some(raw) = b.get(16..16 + len) else {
            break;
        };
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        out.push((wd, mask, String::from_utf8_lossy(&raw[..end]).into_owned()));
        b = &b[16 + len..];
    }
    out
}

fn on_file_event(path: &Path, gone: bool, loader: &Loader, ops: &mpsc::Sender<OpRequest>) {
    let source = path.display().to_string();
    let ask = |op: Op| {
        let (reply, answer) = oneshot::channel();
        ops.blocking_send(OpRequest { op, reply }).ok()?;
        answer.blocking_recv().ok()
    };
    if gone {
        let Some(Ok(slots)) = ask(Op::List) else {
            return;
        };
        if let Some(s) = slots
            .iter()
            .find(|s| s.state == "active" && s.source == source)
        {
            match ask(Op::Unload {
                name: s.name.clone(),
            }) {
                Some(Ok(_)) => {
                    tracing::info!(file = %source, parser = %s.name, "component removed: parser unloading")
                }
                Some(Err(e)) => tracing::warn!(file = %source, error = %e, "unload failed"),
                None => {}
            }
        }
        return;
    }
    let parser = match loader.load(path) {
        Ok(p) => p,
        Err(e) => {
            // Rollback is doing nothing: the running version (if any) stays.
            tracing::warn!(file = %source, error = format!("{e:#}"), "component not loaded; the running version stays");
            return;
        }
    };
    let Some(Ok(slots)) = ask(Op::List) else {
        return;
    };
    let name = parser.name.clone();
    let op = if slots.iter().any(|s| s.state == "active" && s.name == name) {
        Op::Replace {
            name: name.clone(),
            backend: Box::new(parser),
        }
    } else {
        Op::Add(Box::new(parser))
    };
    match ask(op) {
        Some(Ok(_)) => {
            tracing::info!(file = %source, parser = %name, "component (re)loaded from the watched directory")
        }
        Some(Err(e)) => tracing::warn!(file = %source, error = %e, "component not swapped in"),
        None => {}
    }
}
