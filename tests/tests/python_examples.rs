//! Runs the Python example framework's own unit tests (standard library
//! only) so that `cargo test --workspace` covers them too.

use std::process::Command;

#[test]
fn python_example_unit_tests_pass() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "examples/python"])
        .current_dir(root)
        .output()
        .expect("python3 must be installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python unit tests failed:\n{text}");
    assert!(text.contains("OK"), "unexpected unittest output:\n{text}");
}
