//! Shared by the limits_* tests: a one-node cluster with the HTTP API on,
//! reading its /metrics, and raising this test process's open-files limit
//! (the tests hold a thousand connections and more).

#![allow(dead_code)]

use crate::common::http::{Resp, request};
use crate::common::{Cluster, free_tcp_addr};

/// The bearer token of [`one_node`]'s HTTP API.
pub const TOKEN: &str = "limits-token-0123456789";

/// A cluster of one node `n1` with `--http` (and a token file), formed;
/// returns it and the HTTP address.
pub fn one_node(extra: &[&str]) -> (Cluster, String) {
    let mut c = Cluster::new();
    let key = c.key.clone();
    let http = free_tcp_addr();
    let token = c.root.path().join("http-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let token = token.display().to_string();
    let mut args = vec!["--http", http.as_str(), "--http-token-file", token.as_str()];
    args.extend_from_slice(extra);
    c.add("n1", &key, &args);
    c.wait_formed(1);
    (c, http)
}

/// GET `path` from [`one_node`]'s API with its token.
pub fn get(http: &str, path: &str) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    request(http, "GET", path, &[("authorization", &auth)], None).unwrap()
}

/// The value of the sample `name` with `labels` on the node's /metrics.
pub fn metric(http: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let r = get(http, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).unwrap();
    crate::prom::metric(&scrape, name, labels)
}

/// Raises this process's soft limit on open files to at least `wanted`;
/// false (with a message) when the hard limit does not allow it.
pub fn raise_open_files(wanted: u64) -> bool {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_none_or(|c| c >= wanted) {
        return true;
    }
    if now.maximum.is_some_and(|h| h < wanted) {
        eprintln!(
            "skipping: the open-files hard limit is {:?}, below the {wanted} this test needs",
            now.maximum
        );
        return false;
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: now.maximum,
        },
    )
    .is_ok()
}
