//! A fake Kubernetes API server for list and watch, standing in for a real one because no real
//! API server can run on the test machine.
//!
//! [`FakeApiServer`] speaks plain HTTP/1.1 on `127.0.0.1:<port>` (std threads, one per
//! connection, keep-alive) and implements what kube-rs' `watcher`/`reflector` and
//! `metadata_watcher` use:
//!
//! - collection `GET`s for the kinds in the table [`KINDS`] (pods, services, nodes,
//!   endpointslices, replicasets, jobs, and a few more), cluster-wide (`/api/v1/pods`) or
//!   namespaced (`/api/v1/namespaces/<ns>/pods`), plus single-object `GET`s and `/version`;
//! - lists return everything in one page (`limit` honoured by ignoring it, never a `continue`),
//!   with the current global `resourceVersion`; like the real server, items of a typed list carry
//!   no `apiVersion`/`kind`, while watch events and single `GET`s do;
//! - `watch=true` (or `1`) streams `{"type":…,"object":…}\n` lines in HTTP chunks: first every
//!   change after the requested `resourceVersion` (or synthetic `ADDED`s for the current state
//!   when it is `""`/`"0"`, followed by the `k8s.io/initial-events-end` bookmark when
//!   `sendInitialEvents=true`), then live changes until `timeoutSeconds` passes or the server is
//!   dropped;
//! - `fieldSelector` (`=`, `==`, `!=`, comma-separated) over the fields the real server
//!   supports for the kind (e.g. `spec.nodeName` and `metadata.name` for pods; others get the
//!   real server's 400), including the watch semantics of objects moving in or out of the
//!   selection (`ADDED` / `DELETED`); equality-based `labelSelector`s (set-based ones get a 400);
//! - `Accept: …;as=PartialObjectMetadataList…` / `as=PartialObjectMetadata` answers with
//!   `meta.k8s.io/v1` PartialObjectMetadata lists and watch objects;
//! - a global, etcd-like resourceVersion bumped by every change, a change log per kind, and
//!   compaction: [`FakeApiServer::expire`] ends every open watch of the kind with the real
//!   server's `410 Expired` ERROR event and makes any later watch from an older
//!   resourceVersion get the same, which forces kube's watcher to relist.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

/// A resource kind the fake serves.
#[derive(Debug)]
pub struct KindInfo {
    /// `Pod`; also the key for [`FakeApiServer::lists`] and friends.
    pub kind: &'static str,
    /// `pods`, the path segment.
    pub plural: &'static str,
    /// `v1`, `apps/v1`, …
    pub api_version: &'static str,
    pub namespaced: bool,
    /// Field-selector labels the real server accepts besides `metadata.name` and
    /// `metadata.namespace`.
    pub fields: &'static [&'static str],
}

/// Every kind the fake serves.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "Pod",
        plural: "pods",
        api_version: "v1",
        namespaced: true,
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    KindInfo {
        kind: "Service",
        plural: "services",
        api_version: "v1",
        namespaced: true,
        fields: &["spec.clusterIP", "spec.type"],
    },
    KindInfo {
        kind: "Node",
        plural: "nodes",
        api_version: "v1",
        namespaced: false,
        fields: &["spec.unschedulable"],
    },
    KindInfo {
        kind: "Namespace",
        plural: "namespaces",
        api_version: "v1",
        namespaced: false,
        fields: &["status.phase"],
    },
    KindInfo {
        kind: "EndpointSlice",
        plural: "endpointslices",
        api_version: "discovery.k8s.io/v1",
        namespaced: true,
        fields: &["addressType"],
    },
    KindInfo {
        kind: "ReplicaSet",
        plural: "replicasets",
        api_version: "apps/v1",
        namespaced: true,
        fields: &["status.replicas"],
    },
    KindInfo {
        kind: "Deployment",
        plural: "deployments",
        api_version: "apps/v1",
        namespaced: true,
        fields: &[],
    },
    KindInfo {
        kind: "StatefulSet",
        plural: "statefulsets",
        api_version: "apps/v1",
        namespaced: true,
        fields: &[],
    },
    KindInfo {
        kind: "DaemonSet",
        plural: "daemonsets",
        api_version: "apps/v1",
        namespaced: true,
        fields: &[],
    },
    KindInfo {
        kind: "Job",
        plural: "jobs",
        api_version: "batch/v1",
        namespaced: true,
        fields: &["status.successful"],
    },
    KindInfo {
        kind: "CronJob",
        plural: "cronjobs",
        api_version: "batch/v1",
        namespaced: true,
        fields: &[],
    },
];

fn kind_info(kind: &str) -> &'static KindInfo {
    KINDS
        .iter()
        .find(|k| k.kind == kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve kind {kind:?}"))
}

/// The first resourceVersion handed out is `FIRST_RV + 1`; never "0", which means "any" to
/// the real server.
const FIRST_RV: u64 = 1000;
/// Watch timeout when the request has no `timeoutSeconds` (kube always sends one).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often an idle watch checks whether its client hung up.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// One change in a kind's history.
struct Change {
    rv: u64,
    /// The object before the change (`None` when it was created).
    before: Option<Value>,
    /// The object as of `rv`; for a deletion the last state with `resourceVersion` = `rv`.
    after: Value,
    deleted: bool,
}

#[derive(Default)]
struct KindState {
    /// Keyed by (namespace, name); "" namespace for cluster-scoped kinds.
    objects: BTreeMap<(String, String), Value>,
    /// Changes with rv > `compacted`, oldest first.
    log: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Expired.
    compacted: u64,
    /// Bumped by every compaction; an open watch that sees it change ends with 410.
    epoch: u64,
    lists: usize,
    watches: usize,
    open_watches: usize,
}

impl KindState {
    fn compact(&mut self, through: u64) {
        self.compacted = through;
        self.epoch += 1;
        self.log.retain(|c| c.rv > through);
    }
}

struct State {
    rv: u64,
    kinds: HashMap<&'static str, KindState>,
    requests: Vec<String>,
    next_uid: u64,
    shutdown: bool,
}

impl State {
    fn kind(&mut self, kind: &str) -> &mut KindState {
        self.kinds.entry(kind_info(kind).kind).or_default()
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Open connections: a handle on each socket (to shut it down) and its thread.
type Conns = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// The fake API server; see the module docs. Dropping it closes the listener, ends every watch
/// stream (with the chunked terminator) and joins its threads.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
    conns: Conns,
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and starts serving an empty cluster.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fake API server")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: FIRST_RV,
                kinds: HashMap::new(),
                requests: Vec::new(),
                next_uid: 1,
                shutdown: false,
            }),
            changed: Condvar::new(),
        });
        let conns = Conns::default();
        let acceptor = {
            let shared = shared.clone();
            let conns = conns.clone();
            std::thread::Builder::new()
                .name("fake-kubeapi".into())
                .spawn(move || accept_loop(listener, shared, conns))?
        };
        Ok(Self {
            shared,
            addr,
            acceptor: Some(acceptor),
            conns,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig (YAML) with one cluster pointing at [`url`](Self::url), one user
    /// without credentials, and a current context using both (namespace `default`).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake\n  user: {{}}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n\
             preferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Creates or replaces an object (`ADDED` if new, else `MODIFIED`) and returns its new
    /// resourceVersion. The kind comes from the object's `kind`; `apiVersion` is filled in if
    /// absent, `metadata.namespace` defaults to `default` for namespaced kinds, `metadata.uid`
    /// and `metadata.creationTimestamp` are kept from the previous version or generated.
    /// Panics on a kind the fake does not serve or an object without `metadata.name`.
    pub fn apply(&self, obj: Value) -> u64 {
        self.apply_inner(obj, false)
    }

    /// Like [`apply`](Self::apply), but the change never appears as a watch event: the kind's
    /// history is compacted through it, so every open watch of the kind ends with 410 Expired
    /// and every later watch from an older resourceVersion gets 410 too. The object is only
    /// visible through a (re)list, which is what proves a client relisted.
    pub fn apply_silently(&self, obj: Value) -> u64 {
        self.apply_inner(obj, true)
    }

    fn apply_inner(&self, mut obj: Value, silent: bool) -> u64 {
        let info = obj
            .get("kind")
            .and_then(Value::as_str)
            .map(kind_info)
            .expect("object has no `kind`");
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        let uid_seq = st.next_uid;
        let map = obj.as_object_mut().expect("object is not a JSON object");
        map.entry("apiVersion").or_insert(json!(info.api_version));
        let meta = map
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("metadata is not an object");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .expect("object has no metadata.name")
            .to_owned();
        let ns = if info.namespaced {
            meta.entry("namespace")
                .or_insert(json!("default"))
                .as_str()
                .expect("metadata.namespace is not a string")
                .to_owned()
        } else {
            meta.remove("namespace");
            String::new()
        };
        let key = (ns, name);
        let ks = st.kind(info.kind);
        let before = ks.objects.get(&key).cloned();
        let old_meta = before.as_ref().map(|b| &b["metadata"]);
        let mut used_uid = false;
        if !meta.contains_key("uid") {
            let uid = match old_meta.and_then(|m| m.get("uid")) {
                Some(uid) => uid.clone(),
                None => {
                    used_uid = true;
                    json!(format!("00000000-0000-4000-8000-{uid_seq:012x}"))
                }
            };
            meta.insert("uid".into(), uid);
        }
        if !meta.contains_key("creationTimestamp") {
            let ts = old_meta
                .and_then(|m| m.get("creationTimestamp"))
                .cloned()
                .unwrap_or(json!("2024-01-01T00:00:00Z"));
            meta.insert("creationTimestamp".into(), ts);
        }
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        ks.objects.insert(key, obj.clone());
        if silent {
            ks.compact(rv);
        } else {
            ks.log.push(Change {
                rv,
                before,
                after: obj,
                deleted: false,
            });
        }
        if used_uid {
            st.next_uid += 1;
        }
        drop(st);
        self.shared.changed.notify_all();
        rv
    }

    /// Deletes an object (a `DELETED` event carrying its last state with the deletion's
    /// resourceVersion). Returns that resourceVersion, or `None` if there was no such object.
    /// `namespace` is ignored for cluster-scoped kinds.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<u64> {
        let info = kind_info(kind);
        let ns = if info.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        let mut st = self.shared.lock();
        let rv = st.rv + 1;
        let ks = st.kind(kind);
        let before = ks.objects.remove(&(ns.to_owned(), name.to_owned()))?;
        let mut after = before.clone();
        after["metadata"]["resourceVersion"] = json!(rv.to_string());
        ks.log.push(Change {
            rv,
            before: Some(before),
            after,
            deleted: true,
        });
        st.rv = rv;
        drop(st);
        self.shared.changed.notify_all();
        Some(rv)
    }

    /// Compacts `kind`'s history through a fresh resourceVersion: every open watch of the kind
    /// gets a `410 Expired` ERROR event and ends, and any later watch from an older
    /// resourceVersion (i.e. by any client that has not relisted since) gets the same at once.
    pub fn expire(&self, kind: &str) {
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        st.kind(kind).compact(rv);
        drop(st);
        self.shared.changed.notify_all();
    }

    /// [`expire`](Self::expire) for every kind.
    pub fn expire_all(&self) {
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        for info in KINDS {
            st.kind(info.kind).compact(rv);
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    /// List requests served for `kind` (metadata-only ones included).
    pub fn lists(&self, kind: &str) -> usize {
        self.shared.lock().kind(kind).lists
    }

    /// Watch requests received for `kind`, including those answered with 410.
    pub fn watches(&self, kind: &str) -> usize {
        self.shared.lock().kind(kind).watches
    }

    /// Watches of `kind` currently streaming.
    pub fn open_watches(&self, kind: &str) -> usize {
        self.shared.lock().kind(kind).open_watches
    }

    /// Every request line received so far, e.g.
    /// `GET /api/v1/pods?&fieldSelector=spec.nodeName%3Dnode-a&limit=500 HTTP/1.1` (query values
    /// stay percent-encoded, exactly as sent).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        // Wake the acceptor, which checks `shutdown` after every accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        // Idle keep-alive connections are blocked reading: shutting down the read side wakes
        // them with EOF. Watches end by themselves on `shutdown` (after the chunked terminator).
        for (stream, _) in &conns {
            let _ = stream.shutdown(Shutdown::Read);
        }
        for (_, handle) in conns {
            let _ = handle.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, conns: Conns) {
    for conn in listener.incoming() {
        if shared.lock().shutdown {
            return;
        }
        let Ok(conn) = conn else { continue };
        let Ok(clone) = conn.try_clone() else {
            continue;
        };
        // A client that stops reading must not wedge the server (or its drop) forever.
        let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
        let _ = conn.set_nodelay(true);
        let shared = shared.clone();
        let Ok(handle) = std::thread::Builder::new()
            .name("fake-kubeapi-conn".into())
            .spawn(move || {
                let _ = serve_conn(&shared, conn);
            })
        else {
            continue;
        };
        let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|(_, h)| !h.is_finished());
        conns.push((clone, handle));
    }
}

struct Request {
    line: String,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    accept: String,
    close: bool,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn wants_metadata(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }
}

/// Reads one request head (and skips any body); `None` on a clean EOF between requests.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let line = line.trim_end().to_owned();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or_default().to_owned();
    let mut accept = String::new();
    let mut close = version != "HTTP/1.1";
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "accept" => accept = value.to_owned(),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "content-length" => content_length = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    io::copy(
        &mut reader.by_ref().take(content_length as u64),
        &mut io::sink(),
    )?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Some(Request {
        method,
        path: percent_decode(path),
        query,
        accept,
        close,
        line,
    }))
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_conn(shared: &Shared, stream: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    while let Some(req) = read_request(&mut reader)? {
        shared.lock().requests.push(req.line.clone());
        let keep_alive = handle(shared, &stream, &req)?;
        if !keep_alive || req.close {
            break;
        }
    }
    Ok(())
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        _ => "Unknown",
    }
}

fn respond(mut stream: &TcpStream, code: u16, body: &Value) -> io::Result<()> {
    let body = serde_json::to_vec(body).expect("serialising JSON");
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    stream.write_all(&out)?;
    stream.flush()
}

fn respond_status(stream: &TcpStream, code: u16, reason: &str, message: &str) -> io::Result<()> {
    respond(stream, code, &status(code, reason, message))
}

/// A parsed resource path.
struct Target {
    info: &'static KindInfo,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    let info = KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.plural == plural)?;
    if namespace.is_some() && !info.namespaced {
        return None;
    }
    Some(Target {
        info,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

/// Serves one request; `Ok(false)` to close the connection afterwards.
fn handle(shared: &Shared, stream: &TcpStream, req: &Request) -> io::Result<bool> {
    if req.method != "GET" {
        respond_status(
            stream,
            405,
            "MethodNotAllowed",
            &format!("the fake API server only serves GET, not {}", req.method),
        )?;
        return Ok(true);
    }
    if req.path == "/version" {
        respond(
            stream,
            200,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                "platform": "linux/amd64",
            }),
        )?;
        return Ok(true);
    }
    let Some(target) = parse_target(&req.path) else {
        respond_status(
            stream,
            404,
            "NotFound",
            "the server could not find the requested resource",
        )?;
        return Ok(true);
    };
    let meta = req.wants_metadata();
    if let Some(name) = &target.name {
        let ns = target.namespace.clone().unwrap_or_default();
        let obj = shared
            .lock()
            .kind(target.info.kind)
            .objects
            .get(&(ns, name.clone()))
            .cloned();
        match obj {
            Some(obj) => respond(stream, 200, &render(target.info, &obj, meta, true))?,
            None => respond_status(
                stream,
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", target.info.plural),
            )?,
        }
        return Ok(true);
    }
    let filter = match Filter::parse(target.info, target.namespace.clone(), req) {
        Ok(f) => f,
        Err(msg) => {
            respond_status(stream, 400, "BadRequest", &msg)?;
            return Ok(true);
        }
    };
    if req.flag("watch") {
        serve_watch(shared, stream, req, target.info, &filter, meta)
    } else {
        serve_list(shared, stream, req, target.info, &filter, meta)?;
        Ok(true)
    }
}

/// The object as the server sends it: metadata only for `as=PartialObjectMetadata`; without
/// `apiVersion`/`kind` inside a typed list (`typed_meta` false), as the real server does.
fn render(info: &KindInfo, obj: &Value, meta: bool, typed_meta: bool) -> Value {
    if meta {
        return json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj["metadata"],
        });
    }
    let mut obj = obj.clone();
    if let Some(map) = obj.as_object_mut() {
        if typed_meta {
            map.insert("apiVersion".into(), json!(info.api_version));
            map.insert("kind".into(), json!(info.kind));
        } else {
            map.remove("apiVersion");
            map.remove("kind");
        }
    }
    obj
}

fn serve_list(
    shared: &Shared,
    stream: &TcpStream,
    req: &Request,
    info: &'static KindInfo,
    filter: &Filter,
    meta: bool,
) -> io::Result<()> {
    let mut st = shared.lock();
    let rv = st.rv;
    let ks = st.kind(info.kind);
    ks.lists += 1;
    if req.param("resourceVersionMatch") == Some("Exact")
        && let Some(asked) = req
            .param("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
        && asked < ks.compacted
    {
        let msg = format!("too old resource version: {asked} ({})", ks.compacted);
        drop(st);
        return respond_status(stream, 410, "Expired", &msg);
    }
    // Exact reads of a still-available older version get the current state: the fake keeps
    // no snapshots.
    let items: Vec<Value> = ks
        .objects
        .values()
        .filter(|o| filter.matches(o))
        .map(|o| render(info, o, meta, meta))
        .collect();
    drop(st);
    let (api_version, kind) = if meta {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        )
    } else {
        (info.api_version.to_owned(), format!("{}List", info.kind))
    };
    respond(
        stream,
        200,
        &json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    )
}

fn write_chunk(mut stream: &TcpStream, events: &[Value]) -> io::Result<()> {
    let mut out = Vec::new();
    for ev in events {
        let mut line = serde_json::to_vec(ev).expect("serialising JSON");
        line.push(b'\n');
        out.extend_from_slice(format!("{:x}\r\n", line.len()).as_bytes());
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)?;
    stream.flush()
}

/// True once the client has closed its side (checked while a watch is idle).
fn peer_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let r = stream.peek(&mut b);
    let _ = stream.set_nonblocking(false);
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

fn expired_event(asked: u64, oldest: u64) -> Value {
    json!({
        "type": "ERROR",
        "object": status(410, "Expired", &format!("too old resource version: {asked} ({oldest})")),
    })
}

fn serve_watch(
    shared: &Shared,
    stream: &TcpStream,
    req: &Request,
    info: &'static KindInfo,
    filter: &Filter,
    meta: bool,
) -> io::Result<bool> {
    let timeout = match req.param("timeoutSeconds") {
        None | Some("") => DEFAULT_WATCH_TIMEOUT,
        Some(s) => match s.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                respond_status(
                    stream,
                    400,
                    "BadRequest",
                    &format!("invalid timeoutSeconds {s:?}"),
                )?;
                return Ok(true);
            }
        },
    };
    let deadline = Instant::now() + timeout;
    let asked = match req.param("resourceVersion").unwrap_or("") {
        "" | "0" => None,
        s => match s.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                respond_status(
                    stream,
                    400,
                    "BadRequest",
                    &format!("invalid resource version {s:?}"),
                )?;
                return Ok(true);
            }
        },
    };
    let send_initial = req.flag("sendInitialEvents");
    let event =
        |ty: &str, obj: &Value| json!({"type": ty, "object": render(info, obj, meta, true)});

    let mut pending = Vec::new();
    let mut done = false;
    let (mut cursor, epoch) = {
        let mut st = shared.lock();
        let rv = st.rv;
        let ks = st.kind(info.kind);
        ks.watches += 1;
        let cursor = match asked {
            Some(asked) if asked < ks.compacted && !send_initial => {
                pending.push(expired_event(asked, ks.compacted));
                done = true;
                asked
            }
            Some(asked) if !send_initial => asked,
            _ => {
                pending.extend(
                    ks.objects
                        .values()
                        .filter(|o| filter.matches(o))
                        .map(|o| event("ADDED", o)),
                );
                if send_initial {
                    let (api_version, kind) = if meta {
                        ("meta.k8s.io/v1", "PartialObjectMetadata")
                    } else {
                        (info.api_version, info.kind)
                    };
                    pending.push(json!({
                        "type": "BOOKMARK",
                        "object": {
                            "apiVersion": api_version,
                            "kind": kind,
                            "metadata": {
                                "resourceVersion": rv.to_string(),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    }));
                }
                rv
            }
        };
        if !done {
            ks.open_watches += 1;
        }
        (cursor, ks.epoch)
    };
    let mut out = stream;
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    let was_open = !done;
    let mut shutdown = false;
    let result = (|| -> io::Result<()> {
        loop {
            if !pending.is_empty() {
                write_chunk(stream, &pending)?;
                pending.clear();
            }
            if done {
                return Ok(());
            }
            let mut st = shared.lock();
            if st.shutdown {
                shutdown = true;
                return Ok(());
            }
            let ks = st.kind(info.kind);
            if ks.epoch != epoch {
                pending.push(expired_event(cursor, ks.compacted));
                done = true;
                continue;
            }
            let start = ks.log.partition_point(|c| c.rv <= cursor);
            for c in &ks.log[start..] {
                cursor = c.rv;
                if let Some((ty, obj)) = filter.event_for(c) {
                    pending.push(event(ty, obj));
                }
            }
            if !pending.is_empty() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let (st, _) = shared
                .changed
                .wait_timeout(st, WATCH_POLL.min(deadline - now))
                .unwrap_or_else(|e| e.into_inner());
            drop(st);
            if peer_closed(stream) {
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
        }
    })();
    if was_open {
        shared.lock().kind(info.kind).open_watches -= 1;
    }
    result?;
    out.write_all(b"0\r\n\r\n")?;
    out.flush()?;
    Ok(!shutdown)
}

/// Selection by namespace, field selector and (equality-based) label selector.
struct Filter {
    namespace: Option<String>,
    /// (field path, wanted value, equal?)
    fields: Vec<(String, String, bool)>,
    /// (key, value or None for existence, equal/exists?)
    labels: Vec<(String, Option<String>, bool)>,
}

impl Filter {
    fn parse(info: &KindInfo, namespace: Option<String>, req: &Request) -> Result<Self, String> {
        let mut fields = Vec::new();
        for term in req
            .param("fieldSelector")
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (key, value, eq) =
                split_term(term).ok_or_else(|| format!("invalid field selector term {term:?}"))?;
            let key = key.trim();
            if key != "metadata.name" && key != "metadata.namespace" && !info.fields.contains(&key)
            {
                return Err(format!(
                    "field label not supported: {key} (the fake mirrors the real server's \
                     per-kind field labels)"
                ));
            }
            fields.push((key.to_owned(), value.trim().to_owned(), eq));
        }
        let mut labels = Vec::new();
        let selector = req.param("labelSelector").unwrap_or("");
        if selector.contains('(') {
            return Err(format!(
                "set-based label selector {selector:?} is not supported by the fake API server"
            ));
        }
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            labels.push(match split_term(term) {
                Some((k, v, eq)) => (k.trim().to_owned(), Some(v.trim().to_owned()), eq),
                None => match term.strip_prefix('!') {
                    Some(k) => (k.trim().to_owned(), None, false),
                    None => (term.to_owned(), None, true),
                },
            });
        }
        Ok(Self {
            namespace,
            fields,
            labels,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.namespace
            && meta["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        let fields_ok = self.fields.iter().all(|(path, want, eq)| {
            let v = path.split('.').fold(obj, |v, seg| &v[seg]);
            let have = match v {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (&have == want) == *eq
        });
        let labels_ok = self.labels.iter().all(|(k, want, eq)| {
            let have = meta["labels"][k].as_str();
            match want {
                None => have.is_some() == *eq,
                Some(w) => (have == Some(w.as_str())) == *eq,
            }
        });
        fields_ok && labels_ok
    }

    /// The event a watcher with this selection sees for `c`, if any: objects moving into the
    /// selection are `ADDED`, moving out `DELETED`, as with the real server.
    fn event_for<'c>(&self, c: &'c Change) -> Option<(&'static str, &'c Value)> {
        let after = self.matches(&c.after);
        if c.deleted {
            return after.then_some(("DELETED", &c.after));
        }
        let before = c.before.as_ref().is_some_and(|b| self.matches(b));
        match (before, after) {
            (false, true) => Some(("ADDED", &c.after)),
            (true, true) => Some(("MODIFIED", &c.after)),
            (true, false) => Some(("DELETED", &c.after)),
            (false, false) => None,
        }
    }
}

/// `k!=v`, `k==v` or `k=v` → (k, v, equal?).
fn split_term(term: &str) -> Option<(&str, &str, bool)> {
    if let Some((k, v)) = term.split_once("!=") {
        Some((k, v, false))
    } else if let Some((k, v)) = term.split_once("==") {
        Some((k, v, true))
    } else {
        term.split_once('=').map(|(k, v)| (k, v, true))
    }
}

// ---------------------------------------------------------------------------------------------
// Object builders: real Kubernetes JSON shapes, ready for `apply`.

/// An owner reference (`controller: true` when built into an object).
#[derive(Debug, Clone)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    pub fn new(api_version: &str, kind: &str, name: &str, uid: &str) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    pub fn replica_set(name: &str, uid: &str) -> Self {
        Self::new("apps/v1", "ReplicaSet", name, uid)
    }

    pub fn deployment(name: &str, uid: &str) -> Self {
        Self::new("apps/v1", "Deployment", name, uid)
    }

    pub fn daemon_set(name: &str, uid: &str) -> Self {
        Self::new("apps/v1", "DaemonSet", name, uid)
    }

    pub fn stateful_set(name: &str, uid: &str) -> Self {
        Self::new("apps/v1", "StatefulSet", name, uid)
    }

    pub fn job(name: &str, uid: &str) -> Self {
        Self::new("batch/v1", "Job", name, uid)
    }

    pub fn cron_job(name: &str, uid: &str) -> Self {
        Self::new("batch/v1", "CronJob", name, uid)
    }

    fn to_json(&self) -> Value {
        json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        })
    }
}

/// Sets `metadata.ownerReferences` to `[owner]` if there is one (the real server omits the
/// field when empty).
fn with_owner(mut obj: Value, owner: Option<&Owner>) -> Value {
    if let Some(o) = owner {
        obj["metadata"]["ownerReferences"] = json!([o.to_json()]);
    }
    obj
}

/// A deterministic `containerd://<64 hex>` container ID.
pub fn containerd_id(seed: u64) -> String {
    let mut state = seed;
    let hex: String = (0..4)
        .map(|_| format!("{:016x}", crate::splitmix64(&mut state)))
        .collect();
    format!("containerd://{hex}")
}

/// A running pod on `node` with IP `ip` (empty: none yet), label `app: <name>`, one container
/// per `(name, "containerd://<64 hex>")` (image `registry.example/<name>:1`), ready.
pub fn pod(
    ns: &str,
    name: &str,
    uid: &str,
    node: &str,
    ip: &str,
    owner: Option<&Owner>,
    containers: &[(&str, &str)],
) -> Value {
    let specs: Vec<Value> = containers
        .iter()
        .map(|(c, _)| {
            json!({
                "name": c,
                "image": format!("registry.example/{c}:1"),
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            })
        })
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(c, id)| {
            json!({
                "name": c,
                "containerID": id,
                "image": format!("registry.example/{c}:1"),
                "imageID": format!("registry.example/{c}@sha256:{}", "0".repeat(64)),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2024-01-01T00:00:01Z"}},
                "lastState": {},
            })
        })
        .collect();
    let mut status = json!({
        "phase": "Running",
        "qosClass": "BestEffort",
        "startTime": "2024-01-01T00:00:00Z",
        "conditions": [
            {"type": "Ready", "status": "True", "lastProbeTime": null,
             "lastTransitionTime": "2024-01-01T00:00:01Z"},
        ],
        "containerStatuses": statuses,
    });
    if !ip.is_empty() {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "labels": {"app": name},
        },
        "spec": {
            "nodeName": node,
            "containers": specs,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "dnsPolicy": "ClusterFirst",
        },
        "status": status,
    });
    with_owner(pod, owner)
}

/// A ClusterIP service (`cluster_ip` "None" for headless) with `ports` `(name, port, protocol)`
/// (target port = port) and `selector`.
pub fn service(
    ns: &str,
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, u16, &str)],
    selector: &[(&str, &str)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto, "targetPort": p}))
        .collect();
    let selector: serde_json::Map<String, Value> = selector
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": [if cluster_ip.contains(':') { "IPv6" } else { "IPv4" }],
            "ipFamilyPolicy": "SingleStack",
            "ports": ports,
            "selector": selector,
            "sessionAffinity": "None",
        },
        "status": {"loadBalancer": {}},
    })
}

/// An endpoint for [`endpoint_slice`]: `(ip, Some((pod namespace, pod name)), Some(node))`.
pub type Endpoint<'a> = (&'a str, Option<(&'a str, &'a str)>, Option<&'a str>);

/// An EndpointSlice of `service` (label `kubernetes.io/service-name`), one ready endpoint per
/// `(ip, Some((pod namespace, pod name)), Some(node))`, with `ports` `(name, port, protocol)`.
/// The address type follows the first address (IPv6 if it contains ':').
pub fn endpoint_slice(
    ns: &str,
    name: &str,
    service: &str,
    addresses: &[Endpoint<'_>],
    ports: &[(&str, u16, &str)],
) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|(ip, pod, node)| {
            let mut ep = json!({
                "addresses": [ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
            });
            if let Some(node) = node {
                ep["nodeName"] = json!(node);
            }
            if let Some((pns, pname)) = pod {
                ep["targetRef"] = json!({"kind": "Pod", "namespace": pns, "name": pname});
            }
            ep
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto}))
        .collect();
    let v6 = addresses.first().is_some_and(|(ip, _, _)| ip.contains(':'));
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// A ready node with addresses InternalIP `internal_ip` and Hostname `name`.
pub fn node(name: &str, internal_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "lastHeartbeatTime": "2024-01-01T00:00:00Z",
                 "lastTransitionTime": "2024-01-01T00:00:00Z"},
            ],
        },
    })
}

/// A ReplicaSet, owned by deployment `(name, uid)` if given.
pub fn replica_set(ns: &str, name: &str, uid: &str, deployment: Option<(&str, &str)>) -> Value {
    let owner = deployment.map(|(n, u)| Owner::deployment(n, u));
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}},
        },
        "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1},
    });
    with_owner(rs, owner.as_ref())
}

/// A Job, owned by cron job `(name, uid)` if given.
pub fn job(ns: &str, name: &str, uid: &str, cron_job: Option<(&str, &str)>) -> Value {
    let owner = cron_job.map(|(n, u)| Owner::cron_job(n, u));
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
        },
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 6,
            "template": {"metadata": {}, "spec": {"containers": [], "restartPolicy": "Never"}},
        },
        "status": {"active": 1, "startTime": "2024-01-01T00:00:00Z"},
    });
    with_owner(job, owner.as_ref())
}

/// Checks the fake against kube-rs itself (the client the daemon uses): the fake stands in for a
/// Kubernetes API server because none can run on the test machine, so these tests are what
/// makes it trustworthy.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::httplab::Scratch;
    use crate::wait_until;

    use futures::StreamExt as _;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::Api;
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use kube::core::PartialObjectMeta;
    use kube::runtime::reflector::{self, Store};
    use kube::runtime::{WatchStreamExt as _, watcher};
    use kube::{Client, Config, ResourceExt as _};

    const DEADLINE: Duration = Duration::from_secs(20);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A kube client built the way the daemon builds one: from a kubeconfig file.
    fn client(rt: &tokio::runtime::Runtime, server: &FakeApiServer, dir: &Scratch) -> Client {
        let path = dir.path().join("kubeconfig");
        server.write_kubeconfig(&path).unwrap();
        rt.block_on(async {
            let kubeconfig = Kubeconfig::read_from(&path).unwrap();
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
            Client::try_from(config).unwrap()
        })
    }

    fn names<K: kube::Resource + Clone>(store: &Store<K>) -> Vec<String>
    where
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let mut v: Vec<String> = store.state().iter().map(|o| o.name_any()).collect();
        v.sort();
        v
    }

    fn wait_names<K: kube::Resource + Clone>(store: &Store<K>, want: &[&str], what: &str)
    where
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        wait_until(DEADLINE, what, || (names(store) == want).then_some(()))
            .unwrap_or_else(|e| panic!("{e}; store has {:?}", names(store)));
    }

    fn test_pod(name: &str, node: &str, n: u64) -> Value {
        let owner = Owner::replica_set("web-5d8f", "rs-uid-1");
        pod(
            "shop",
            name,
            &format!("pod-uid-{n}"),
            node,
            &format!("10.1.0.{n}"),
            Some(&owner),
            &[
                ("app", &containerd_id(n)),
                ("sidecar", &containerd_id(100 + n)),
            ],
        )
    }

    #[test]
    fn reflector_follows_lists_watches_selectors_and_410_relists() {
        let rt = runtime();
        let dir = Scratch::new("kubeapi");
        let server = FakeApiServer::start().unwrap();
        server.apply(test_pod("a-1", "node-a", 1));
        server.apply(test_pod("b-1", "node-b", 2));
        let client = client(&rt, &server, &dir);

        let (reader, writer) = reflector::store::<Pod>();
        let cfg = watcher::Config::default().fields("spec.nodeName=node-a");
        let stream = reflector::reflector(
            writer,
            watcher(Api::<Pod>::all(client), cfg).default_backoff(),
        );
        rt.spawn(stream.for_each(|_| async {}));

        wait_names(&reader, &["a-1"], "the initial list");
        let a1 = reader
            .state()
            .into_iter()
            .find(|p| p.name_any() == "a-1")
            .unwrap();
        let status = a1.status.as_ref().unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.1"));
        let cs = status.container_statuses.as_ref().unwrap();
        assert_eq!(
            cs[0].container_id.as_deref(),
            Some(containerd_id(1).as_str())
        );
        assert_eq!(a1.owner_references()[0].controller, Some(true));
        assert_eq!(server.lists("Pod"), 1);

        // Live watch events: an add, one outside the selector, one moving out of it, a delete.
        server.apply(test_pod("a-2", "node-a", 3));
        server.apply(test_pod("b-2", "node-b", 4));
        wait_names(&reader, &["a-1", "a-2"], "a pod added after the list");
        server.apply(test_pod("a-1", "node-b", 1));
        wait_names(&reader, &["a-2"], "a pod moved off the selected node");
        assert!(server.delete("Pod", Some("shop"), "a-2").is_some());
        wait_names(&reader, &[], "a deleted pod to disappear");
        assert_eq!(server.lists("Pod"), 1, "no relist without a 410");

        // Compaction: the open watch gets 410 Expired, and a change applied silently is only
        // visible through a relist.
        server.expire("Pod");
        server.apply_silently(test_pod("a-3", "node-a", 5));
        wait_names(&reader, &["a-3"], "a silently applied pod (after a relist)");
        assert!(
            server.lists("Pod") >= 2,
            "the 410 should have forced a relist"
        );

        // Still watching after the relist.
        server.apply(test_pod("a-4", "node-a", 6));
        wait_names(&reader, &["a-3", "a-4"], "a pod added after the relist");

        let requests = server.requests();
        for r in &requests {
            eprintln!("request: {r}");
        }
        let pods: Vec<&String> = requests
            .iter()
            .filter(|r| r.contains("/api/v1/pods?"))
            .collect();
        assert!(
            pods.iter()
                .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a"))
        );
        assert!(pods.iter().any(|r| r.contains("watch=true")));
        assert!(pods.iter().any(|r| !r.contains("watch=")));

        // Dropping the server ends the open watch and returns promptly.
        wait_until(DEADLINE, "an open pod watch", || {
            (server.open_watches("Pod") == 1).then_some(())
        })
        .unwrap();
        let t = Instant::now();
        drop(server);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "drop took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn streaming_list_and_watch_timeouts_resume_without_relisting() {
        let rt = runtime();
        let dir = Scratch::new("kubeapi");
        let server = FakeApiServer::start().unwrap();
        server.apply(test_pod("a-1", "node-a", 1));
        let client = client(&rt, &server, &dir);

        let (reader, writer) = reflector::store::<Pod>();
        let cfg = watcher::Config::default().streaming_lists().timeout(1);
        let stream = reflector::reflector(
            writer,
            watcher(Api::<Pod>::all(client), cfg).default_backoff(),
        );
        rt.spawn(stream.for_each(|_| async {}));
        wait_names(&reader, &["a-1"], "the initial events");
        // The server ends each watch after 1 s; kube resumes from the last resourceVersion.
        wait_until(DEADLINE, "a resumed watch", || {
            (server.watches("Pod") >= 3).then_some(())
        })
        .unwrap();
        server.apply(test_pod("a-2", "node-a", 2));
        wait_names(&reader, &["a-1", "a-2"], "a pod added after watch restarts");
        assert_eq!(server.lists("Pod"), 0, "streaming lists never list");
        let requests = server.requests();
        assert!(
            requests[0].contains("sendInitialEvents=true"),
            "{requests:?}"
        );
        assert!(
            requests[1..]
                .iter()
                .all(|r| !r.contains("sendInitialEvents")),
            "{requests:?}"
        );
    }

    #[test]
    fn metadata_watchers_see_owners() {
        let rt = runtime();
        let dir = Scratch::new("kubeapi");
        let server = FakeApiServer::start().unwrap();
        server.apply(replica_set(
            "shop",
            "web-5d8f",
            "rs-uid-1",
            Some(("web", "dep-uid-1")),
        ));
        server.apply(job(
            "batch",
            "report-1",
            "job-uid-1",
            Some(("report", "cj-uid-1")),
        ));
        let client = client(&rt, &server, &dir);

        // The daemon's form: `Api<PartialObjectMeta<K>>` makes metadata-only requests.
        let (rs_reader, writer) = reflector::store::<PartialObjectMeta<ReplicaSet>>();
        let api = Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone());
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        rt.spawn(stream.for_each(|_| async {}));
        // The deprecated `metadata_watcher` sends the same requests.
        let (job_reader, writer) = reflector::store::<PartialObjectMeta<Job>>();
        #[allow(deprecated)]
        let stream =
            kube::runtime::metadata_watcher(Api::<Job>::all(client), watcher::Config::default());
        rt.spawn(reflector::reflector(writer, stream.default_backoff()).for_each(|_| async {}));

        wait_names(&rs_reader, &["web-5d8f"], "the listed replica set");
        wait_names(&job_reader, &["report-1"], "the listed job");
        server.apply(replica_set(
            "shop",
            "api-77c4",
            "rs-uid-2",
            Some(("api", "dep-uid-2")),
        ));
        server.apply(job(
            "batch",
            "report-2",
            "job-uid-2",
            Some(("report", "cj-uid-1")),
        ));
        wait_names(
            &rs_reader,
            &["api-77c4", "web-5d8f"],
            "the watched replica set",
        );
        wait_names(&job_reader, &["report-1", "report-2"], "the watched job");

        let rs = rs_reader
            .state()
            .into_iter()
            .find(|r| r.name_any() == "api-77c4")
            .unwrap();
        let owner = &rs.owner_references()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("Deployment", "api", "dep-uid-2", Some(true))
        );
        assert_eq!(rs.uid().as_deref(), Some("rs-uid-2"));
        assert_eq!(
            rs.types.as_ref().map(|t| t.kind.as_str()),
            Some("PartialObjectMetadata")
        );
        let job = job_reader
            .state()
            .into_iter()
            .find(|j| j.name_any() == "report-2")
            .unwrap();
        assert_eq!(job.owner_references()[0].kind, "CronJob");
        assert_eq!(server.lists("ReplicaSet"), 1);
        assert_eq!(server.lists("Job"), 1);
        assert!(server.watches("ReplicaSet") >= 1);
        for r in server.requests() {
            eprintln!("request: {r}");
        }
    }

    /// A raw HTTP/1.1 client on one keep-alive connection.
    struct Raw(BufReader<TcpStream>);

    impl Raw {
        fn connect(server: &FakeApiServer) -> Self {
            Self(BufReader::new(TcpStream::connect(server.addr).unwrap()))
        }

        /// Sends a GET and returns (status code, body); a chunked body is read to its end.
        fn get(&mut self, target: &str, accept: &str) -> (u16, String) {
            let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n");
            self.0.get_mut().write_all(req.as_bytes()).unwrap();
            let mut line = String::new();
            self.0.read_line(&mut line).unwrap();
            let code: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
            let (mut len, mut chunked) = (0usize, false);
            loop {
                let mut h = String::new();
                self.0.read_line(&mut h).unwrap();
                let h = h.trim_end().to_ascii_lowercase();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                chunked |= h == "transfer-encoding: chunked";
            }
            let mut body = Vec::new();
            if chunked {
                loop {
                    let mut size = String::new();
                    self.0.read_line(&mut size).unwrap();
                    let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
                    let mut chunk = vec![0; size + 2];
                    self.0.read_exact(&mut chunk).unwrap();
                    if size == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..size]);
                }
            } else {
                body.resize(len, 0);
                self.0.read_exact(&mut body).unwrap();
            }
            (code, String::from_utf8(body).unwrap())
        }
    }

    fn events(body: &str) -> Vec<Value> {
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn raw_http_lists_watches_and_errors() {
        let server = FakeApiServer::start().unwrap();
        server.apply(node("node-a", "192.0.2.1"));
        let rv_b = server.apply(node("node-b", "192.0.2.2"));
        let rv_now = server.apply(job(
            "batch",
            "report-1",
            "job-uid-1",
            Some(("report", "cj-uid-1")),
        ));
        let mut c = Raw::connect(&server);

        let (code, body) = c.get("/api/v1/nodes?fieldSelector=metadata.name%3Dnode-b", "*/*");
        assert_eq!(code, 200);
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["kind"], "NodeList");
        assert_eq!(
            list["metadata"]["resourceVersion"],
            rv_now.to_string(),
            "the global rv"
        );
        assert_eq!(
            list["items"][0]["metadata"]["resourceVersion"],
            rv_b.to_string()
        );
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["metadata"]["name"], "node-b");
        assert!(
            list["items"][0].get("kind").is_none(),
            "list items carry no kind"
        );

        // Metadata-only list, same connection.
        let meta = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        let (code, body) = c.get("/apis/batch/v1/namespaces/batch/jobs?limit=500", meta);
        assert_eq!(code, 200);
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(
            list["items"][0]["metadata"]["ownerReferences"][0]["kind"],
            "CronJob"
        );
        assert!(list["items"][0].get("spec").is_none());

        // A watch from before node-b's creation replays it, then ends at timeoutSeconds.
        let from = rv_b - 1;
        let t = Instant::now();
        let (code, body) = c.get(
            &format!("/api/v1/nodes?watch=true&timeoutSeconds=1&resourceVersion={from}"),
            "*/*",
        );
        assert_eq!(code, 200);
        assert!(t.elapsed() >= Duration::from_secs(1));
        let evs = events(&body);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["type"], "ADDED");
        assert_eq!(evs[0]["object"]["kind"], "Node");
        assert_eq!(evs[0]["object"]["metadata"]["name"], "node-b");

        // Streaming list: initial ADDEDs, then the initial-events-end bookmark.
        let (_, body) = c.get(
            "/api/v1/nodes?watch=true&timeoutSeconds=1&allowWatchBookmarks=true\
             &sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0",
            "*/*",
        );
        let evs = events(&body);
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[2]["type"], "BOOKMARK");
        assert_eq!(
            evs[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );

        // After compaction, a watch from an old resourceVersion gets 410 as an ERROR event.
        server.expire_all();
        let (code, body) = c.get(
            &format!("/api/v1/nodes?watch=1&resourceVersion={from}"),
            "*/*",
        );
        assert_eq!(code, 200);
        let evs = events(&body);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["type"], "ERROR");
        assert_eq!(evs[0]["object"]["code"], 410);
        assert_eq!(evs[0]["object"]["reason"], "Expired");

        // Unsupported field labels and unknown paths fail like the real server.
        let (code, body) = c.get("/api/v1/services?fieldSelector=spec.nodeName%3Dx", "*/*");
        assert_eq!(code, 400);
        assert!(body.contains("field label not supported"), "{body}");
        assert_eq!(c.get("/api/v1/widgets", "*/*").0, 404);
        assert_eq!(c.get("/api/v1/nodes/node-a", "*/*").0, 200);
        assert_eq!(c.get("/api/v1/nodes/node-z", "*/*").0, 404);
        assert_eq!(server.watches("Node"), 3);
        assert_eq!(server.lists("Node"), 1);
        assert_eq!(server.requests().len(), 9);
    }
}
