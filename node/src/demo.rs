//! `agora demo`: a throwaway local cluster (placeholder).

use crate::cli::DemoArgs;

/// Runs the demo.
///
/// # Errors
/// Any failure starting or driving the cluster.
pub async fn run(_args: DemoArgs) -> anyhow::Result<i32> {
    anyhow::bail!("demo: not yet")
}
