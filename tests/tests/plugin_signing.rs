//! Plugin manifests and signatures end to end: `sonde plugin keygen` and `sonde plugin package`
//! publish the example RESP parser (a third party's component); it verifies against the
//! publisher's key, and every way of breaking the chain is refused with a message that says
//! what is wrong: a flipped byte (tampered, with both sha256), no manifest (unsigned; accepted
//! once the directory is in `allow_unsigned_dirs`), an untrusted key (named, to add), a
//! manifest edited after signing (signature invalid), a manifest naming another component
//! (identity), a parser in `rule_dirs` (world). `sonde plugin verify` reports per component
//! and fails when one is refused, and `sonde run` with a tampered parser refuses to start.
//! No root needed: the daemon fails before it captures anything.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sonde_sandbox::PluginsConfig;
use sonde_sandbox::fault_rules::WasmRuleEngine;
use sonde_sandbox::manifest::{self, Manifest, Trust, VerifyError, World};
use sonde_sandbox::{package, parsers};
use sonde_tests::httplab::{Scratch, free_port};
use sonde_tests::{sonde_bin_path, wasm};

/// What the example parser calls itself.
const NAME: &str = "sonde-redis";
const VERSION: &str = "0.1.0";
const STEM: &str = "sonde-redis-0.1.0";

fn sonde(args: &[&str]) -> Output {
    Command::new(sonde_bin_path())
        .args(args)
        .env("SONDE_LOG", "warn")
        .output()
        .expect("running sonde")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The publisher's side, done once through the binary: a key pair and the packaged parser.
struct Published {
    dir: PathBuf,
    secret: PathBuf,
    public_key: String,
    /// `<dir>/pkg`: `<STEM>.wasm`, `<STEM>.toml`, `<STEM>.tar`.
    pkg: PathBuf,
    /// What `keygen` and `package` printed.
    keygen_out: Output,
    package_out: Output,
}

fn published() -> &'static Published {
    static P: OnceLock<Published> = OnceLock::new();
    P.get_or_init(|| {
        let resp = wasm::resp_parser();
        let dir = sonde_tests::target_dir().join("plugin-signing");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("acme.key");
        let keygen_out = sonde(&["plugin", "keygen", "--out", secret.to_str().unwrap()]);
        assert!(keygen_out.status.success(), "{}", text(&keygen_out.stderr));
        let public_key = text(&keygen_out.stdout).trim().to_string();
        let pkg = dir.join("pkg");
        let package_out = sonde(&[
            "plugin",
            "package",
            "--wasm",
            resp.to_str().unwrap(),
            "--key",
            secret.to_str().unwrap(),
            "--publisher",
            "acme",
            "--out",
            pkg.to_str().unwrap(),
            "--port",
            "6379",
            "--tar",
        ]);
        assert!(
            package_out.status.success(),
            "{}",
            text(&package_out.stderr)
        );
        Published {
            dir,
            secret,
            public_key,
            pkg,
            keygen_out,
            package_out,
        }
    })
}

/// A fresh directory holding a copy of the package's `.wasm` and `.toml`.
fn copy_of_package(what: &str) -> (Scratch, PathBuf) {
    let p = published();
    let d = Scratch::new(what);
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            p.pkg.join(format!("{STEM}.{ext}")),
            d.path().join(format!("{STEM}.{ext}")),
        )
        .unwrap();
    }
    let wasm = d.path().join(format!("{STEM}.wasm"));
    (d, wasm)
}

fn trust_acme() -> Trust {
    let mut t = Trust::default();
    t.add_key("acme-ops", &published().public_key).unwrap();
    t
}

fn read_manifest(wasm: &Path) -> Manifest {
    Manifest::from_toml(&std::fs::read_to_string(manifest::manifest_path(wasm)).unwrap()).unwrap()
}

fn write_manifest(wasm: &Path, m: &Manifest) {
    std::fs::write(manifest::manifest_path(wasm), m.to_toml()).unwrap();
}

#[test]
fn keygen_and_package_publish_a_signed_parser_that_verifies() {
    let p = published();
    // keygen: the secret key private, the public one printed and beside it.
    assert!(p.public_key.starts_with("ed25519:"), "{}", p.public_key);
    let mode = std::fs::metadata(&p.secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pub_file = std::fs::read_to_string(p.dir.join("acme.key.pub")).unwrap();
    assert_eq!(pub_file.trim(), p.public_key);
    assert!(!p.keygen_out.stdout.is_empty());
    let again = sonde(&["plugin", "keygen", "--out", p.secret.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not overwriting"),
        "{}",
        text(&again.stderr)
    );

    // package: the component under its name, and a manifest read from the component itself.
    let out = text(&p.package_out.stdout);
    assert!(out.contains(&format!("packaged {NAME} {VERSION}")), "{out}");
    let wasm = p.pkg.join(format!("{STEM}.wasm"));
    assert_eq!(
        std::fs::read(&wasm).unwrap(),
        std::fs::read(wasm::resp_parser()).unwrap()
    );
    let m = read_manifest(&wasm);
    assert_eq!(m.plugin.name, NAME);
    assert_eq!(m.plugin.version, VERSION);
    assert_eq!(m.plugin.world, "sonde:plugin/protocol-parser@0.1.0");
    assert_eq!(m.plugin.protocols, ["redis"]);
    assert_eq!(m.plugin.ports, [6379]);
    assert!(m.plugin.capabilities.is_empty());
    assert_eq!(m.component.file, format!("{STEM}.wasm"));
    let sig = m.signature.as_ref().expect("signed");
    assert_eq!(
        (sig.publisher.as_str(), sig.key.as_str()),
        ("acme", p.public_key.as_str())
    );

    // The daemon's check: the bytes handed back are the file's, signed by the trusted key.
    let v = manifest::verify(&wasm, &trust_acme()).unwrap();
    assert_eq!(v.signed_by.as_deref(), Some("acme-ops"));
    assert_eq!(v.wasm, std::fs::read(&wasm).unwrap());
    assert_eq!(v.world(), Some(World::ProtocolParser));

    // The tarball: both files at its root, byte for byte.
    let tar = p.pkg.join(format!("{STEM}.tar"));
    let list = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert_eq!(
        text(&list.stdout).lines().collect::<Vec<_>>(),
        [format!("{STEM}.wasm"), format!("{STEM}.toml")]
    );
    let x = Scratch::new("untar");
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(x.path())
        .status()
        .unwrap();
    assert!(st.success());
    for ext in ["wasm", "toml"] {
        let f = format!("{STEM}.{ext}");
        assert_eq!(
            std::fs::read(x.path().join(&f)).unwrap(),
            std::fs::read(p.pkg.join(&f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn tampered_unsigned_untrusted_and_edited_components_are_refused() {
    let trust = trust_acme();

    // One byte of the component flipped: tampered, naming both hashes.
    let (_d, wasm) = copy_of_package("tampered");
    let signed_sha = read_manifest(&wasm).component.sha256;
    let mut bytes = std::fs::read(&wasm).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&wasm, &bytes).unwrap();
    let err = manifest::verify(&wasm, &trust).unwrap_err();
    assert!(matches!(err, VerifyError::Tampered { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "tampered: the component's sha256 is {}",
            manifest::sha256_hex(&bytes)
        )) && msg.contains(&format!("says {signed_sha}"))
            && msg.contains(&wasm.display().to_string()),
        "{msg}"
    );

    // No manifest: unsigned, refused with the way out; accepted from an allowed directory.
    let (d, wasm) = copy_of_package("unsigned");
    std::fs::remove_file(manifest::manifest_path(&wasm)).unwrap();
    let msg = manifest::verify(&wasm, &trust).unwrap_err().to_string();
    assert!(
        msg.contains("refused: unsigned")
            && msg.contains(&format!(
                "allow_unsigned_dirs = [\"{}\"]",
                d.path().display()
            )),
        "{msg}"
    );
    let mut allowed = trust.clone();
    allowed.allow_unsigned(d.path());
    let v = manifest::verify(&wasm, &allowed).unwrap();
    assert!(v.manifest.is_none() && v.signed_by.is_none());

    // Signed by a key the operator does not trust: refused, naming the key to add.
    let (_d, wasm) = copy_of_package("untrusted");
    let mallory = package::generate_key().unwrap();
    let mallory_key = manifest::format_public_key(&mallory.verifying_key());
    let mut m = read_manifest(&wasm);
    m.sign("mallory", &mallory);
    write_manifest(&wasm, &m);
    let err = manifest::verify(&wasm, &trust).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("key = \"{mallory_key}\"")) && msg.contains("not trusted"),
        "{msg}"
    );

    // The manifest's version edited after signing: the signature no longer holds.
    let (_d, wasm) = copy_of_package("edited");
    let path = manifest::manifest_path(&wasm);
    let toml = std::fs::read_to_string(&path).unwrap();
    let edited = toml.replace("version = \"0.1.0\"", "version = \"0.1.1\"");
    assert_ne!(edited, toml);
    std::fs::write(&path, edited).unwrap();
    let err = manifest::verify(&wasm, &trust).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("signature invalid"), "{err}");
}

#[test]
fn the_loaders_check_signature_world_and_identity() {
    let p = published();
    let cache = sonde_tests::target_dir().join("plugin-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let cfg = |dir: &Path| PluginsConfig {
        cache_dir: Some(cache.clone()),
        default_parsers: false,
        default_rules: false,
        parser_dirs: vec![dir.to_path_buf()],
        trusted_keys: vec![manifest::TrustedKey {
            name: "acme-ops".into(),
            key: p.public_key.clone(),
        }],
        ..PluginsConfig::default()
    };

    // The signed package loads as a parser.
    let (d, wasm) = copy_of_package("load");
    let c = cfg(d.path());
    let engine = parsers::engine(&c).unwrap();
    let loaded = parsers::load_all(&c, &engine).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        (loaded[0].name.as_str(), loaded[0].version.as_str()),
        (NAME, VERSION)
    );

    // Without the trusted key, the daemon's loader refuses it, naming the key.
    let untrusting = PluginsConfig {
        trusted_keys: vec![],
        ..c.clone()
    };
    let err = format!(
        "{:#}",
        parsers::load_all(&untrusting, &engine).err().unwrap()
    );
    assert!(
        err.contains(&p.public_key) && err.contains("not trusted"),
        "{err}"
    );

    // A parser in rule_dirs: the world is wrong, whoever signed it.
    let rules = PluginsConfig {
        parser_dirs: vec![],
        rule_dirs: vec![d.path().to_path_buf()],
        ..c.clone()
    };
    let err = format!("{:#}", WasmRuleEngine::load(&rules).err().unwrap());
    assert!(
        err.contains("declares the world sonde:plugin/protocol-parser@0.1.0")
            && err.contains("put it in parser_dirs"),
        "{err}"
    );

    // A validly signed manifest whose name is not the component's own: refused after loading.
    let mut m = read_manifest(&wasm);
    m.plugin.name = "redis-by-acme".into();
    m.sign("acme", &package::read_signing_key(&p.secret).unwrap());
    write_manifest(&wasm, &m);
    assert!(manifest::verify(&wasm, &trust_acme()).is_ok());
    let err = format!("{:#}", parsers::load_all(&c, &engine).err().unwrap());
    assert!(
        err.contains(&format!(
            "the component calls itself {NAME} {VERSION}, its manifest says redis-by-acme {VERSION}"
        )),
        "{err}"
    );
}

#[test]
fn sonde_plugin_verify_reports_each_component_and_fails_on_a_refusal() {
    let p = published();
    let pkg = p.pkg.to_str().unwrap();
    let ok = sonde(&["plugin", "verify", pkg, "--trusted-key", &p.public_key]);
    let out = text(&ok.stdout);
    assert!(ok.status.success(), "{out}{}", text(&ok.stderr));
    assert!(
        out.starts_with("OK ")
            && out.contains(&format!(
                "{NAME} {VERSION} (sonde:plugin/protocol-parser@0.1.0)"
            ))
            && out.contains("signed by \"acme\""),
        "{out}"
    );
    // Not trusted (no key given, none in the default config): refused, exit status 1.
    let refused = sonde(&["plugin", "verify", pkg]);
    assert_eq!(refused.status.code(), Some(1));
    let out = text(&refused.stdout);
    assert!(
        out.starts_with("REFUSED ") && out.contains("not trusted") && out.contains(&p.public_key),
        "{out}"
    );
    assert!(
        text(&refused.stderr).contains("1 of 1 components refused"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn sonde_run_refuses_to_start_with_a_tampered_parser() {
    let p = published();
    let (d, wasm) = copy_of_package("run-tampered");
    let mut bytes = std::fs::read(&wasm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&wasm, &bytes).unwrap();
    let config = d.path().join("sonde.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[plugins]\ncache_dir = \"\"\n\
             default_parsers = false\nparser_dirs = [\"{dir}\"]\n\n\
             [[plugins.trusted_keys]]\nname = \"acme\"\nkey = \"{key}\"\n\n\
             [correlation]\nhost_cgroup_namespace = false\n\n[kubernetes]\nmode = \"off\"\n",
            port = free_port(),
            dir = d.path().display(),
            key = p.public_key,
        ),
    )
    .unwrap();
    let mut child = Command::new(sonde_bin_path())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sonde run was still running after 60 s with a tampered parser");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: refused: tampered: the component's sha256 is {}",
            wasm.display(),
            manifest::sha256_hex(&bytes)
        )),
        "{stderr}"
    );
}
