//! Headless Chromium (Debian's `chromium` package) for dashboard checks:
//! render a URL with its JavaScript run, return the DOM, take a screenshot.
//!
//! Usable from any test that has a dashboard URL (this crate's router tests
//! now; the multi-process cluster tests later): copy or `#[path]`-include it.
//!
//! A test that needs the browser starts with [`chromium_or_skip`]: without
//! one it prints a line saying so and skips, so that `cargo test --workspace`
//! passes on a machine with only Rust and Python; with
//! `AGORA_REQUIRE_BROWSER=1` (set by .ci/run, which installs chromium) a
//! missing browser fails the test instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Set to 1 (as .ci/run does), a missing browser fails the test instead of
/// skipping it.
pub const REQUIRE_ENV: &str = "AGORA_REQUIRE_BROWSER";

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The browser for `test`, or `None` after printing one line on stderr
/// saying why `test` is skipped.
///
/// # Panics
/// No browser while `AGORA_REQUIRE_BROWSER=1`.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        let why = "no chromium or chromium-browser on PATH (nor $CHROMIUM); \
                   `apt-get install chromium` to run the dashboard tests";
        assert!(
            std::env::var_os(REQUIRE_ENV).is_none_or(|v| v != "1"),
            "{test}: {why} ({REQUIRE_ENV}=1 makes a missing browser a failure)"
        );
        // Straight to the stream, past the test harness's output capture,
        // so the skip shows in `cargo test`'s output.
        let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
    }
    found
}

async fn run_chromium(mode_args: &[String], url: &str) -> Result<Vec<u8>, String> {
    let bin = chromium().ok_or("chromium is not installed (apt-get install -y chromium)")?;
    // Removed when dropped, on every path out of here.
    let profile = tempfile::Builder::new()
        .prefix("agora-chromium-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary profile dir: {e}"))?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // Let the page's JavaScript fetch its data and render before the dump.
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(mode_args)
    .arg(url)
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .map_err(|_| "chromium did not finish within 90 s".to_string())?
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "chromium exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// The DOM of `url` after its scripts ran.
///
/// # Errors
/// Chromium is missing, fails or hangs.
pub async fn dump_dom(url: &str) -> Result<String, String> {
    let out = run_chromium(&["--dump-dom".to_string()], url).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Saves a PNG screenshot of `url` at `width`x`height`.
///
/// # Errors
/// Chromium is missing or fails, or wrote no file.
pub async fn screenshot(url: &str, file: &Path, width: u32, height: u32) -> Result<(), String> {
    let file = std::path::absolute(file).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&file);
    run_chromium(
        &[
            format!("--screenshot={}", file.display()),
            format!("--window-size={width},{height}"),
            "--hide-scrollbars".to_string(),
        ],
        url,
    )
    .await?;
    if file.is_file() {
        Ok(())
    } else {
        Err(format!(
            "chromium wrote no screenshot at {}",
            file.display()
        ))
    }
}

/// Renders the dashboard at `url` and checks that every expected string
/// (node ids, task ids) appears in the rendered DOM.
///
/// # Errors
/// Which strings are missing, with the start of the DOM.
pub async fn check_dashboard(url: &str, expected: &[&str]) -> Result<String, String> {
    let dom = dump_dom(url).await?;
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|s| !dom.contains(s))
        .collect();
    if missing.is_empty() {
        Ok(dom)
    } else {
        let head: String = dom.chars().take(3000).collect();
        Err(format!(
            "missing from the rendered dashboard: {missing:?}\n{head}"
        ))
    }
}
