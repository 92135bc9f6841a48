//! Locating the binaries under test in the target directory of the running test.

use std::path::{Path, PathBuf};

/// Path of `sonde-testpeer`; `SONDE_TESTPEER` overrides it.
pub fn testpeer_path() -> PathBuf {
    locate_bin("SONDE_TESTPEER", "sonde-testpeer")
}

/// Path of the `sonde` daemon binary; `SONDE_BIN` overrides it.
pub fn sonde_bin_path() -> PathBuf {
    locate_bin("SONDE_BIN", "sonde")
}

fn locate_bin(env_var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env_var}={} is not a file", p.display());
        return p;
    }
    let path = target_profile_dir().join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: run `cargo build -p sonde -p sonde-tests` first \
         (same profile as the tests), or point {env_var} at it",
        path.display()
    );
    path
}

/// `target/<profile>/`: test executables run from `target/<profile>/deps/`, and cargo puts the
/// workspace's binaries one level up.
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot determine the test executable's path");
    let dir = exe
        .parent()
        .expect("test executable has no parent directory");
    let dir = if dir.file_name() == Some("deps".as_ref()) {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Path::to_path_buf(dir)
}

/// The cargo target directory (`target/`), one level above the profile directory.
pub fn target_dir() -> PathBuf {
    let profile = target_profile_dir();
    profile.parent().map(Path::to_path_buf).unwrap_or(profile)
}
