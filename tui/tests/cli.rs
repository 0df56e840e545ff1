//! The `neurolink-tui` binary's command line (this also makes `cargo test` build the binary the
//! end-to-end suite drives in a pseudo-terminal).

use std::process::Command;

#[test]
fn help_explains_the_dashboard() {
    let out = Command::new(env!("CARGO_BIN_EXE_neurolink-tui"))
        .arg("--help")
        .output()
        .expect("running neurolink-tui --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--socket"), "{text}");
    assert!(text.contains("dashboard"), "{text}");
}
