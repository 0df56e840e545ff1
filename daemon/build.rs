//! `neurolink --version` names the commit it was built from, when built from a git checkout,
//! and says so when the build was profile-guided (`tests/bench/pgo.sh`).

use std::process::Command;

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    // Cargo hands build scripts the compiler flags it uses, joined by 0x1f (`-Cprofile-use=F`
    // is one of them, `-C profile-use=F` two).
    let guided = std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|flags| {
        flags
            .split('\x1f')
            .any(|f| f.trim_start_matches("-C").starts_with("profile-use"))
    });
    let notes: Vec<String> = commit
        .map(|c| format!("commit {c}"))
        .into_iter()
        .chain(guided.then(|| "profile-guided".to_string()))
        .collect();
    let long = if notes.is_empty() {
        version.to_string()
    } else {
        format!("{version} ({})", notes.join(", "))
    };
    println!("cargo:rustc-env=NEUROLINK_VERSION={long}");
    // A new commit moves HEAD or the branch it points to.
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
}
