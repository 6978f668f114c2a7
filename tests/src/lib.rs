//! The agora-tests package holds workspace-level tests that need no agora
//! binary (tests/tests/*.rs, e.g. the Python example's own unit tests).
//!
//! The multi-process cluster tests that start the real `agora` binary live
//! in node/tests/ instead (cluster_run, cluster_key, cluster_lost,
//! agent_restart, agent_env, socket_bad_frames, python_framework, ..., with
//! the harness in node/tests/common/, whose own cleanup harness_cleanup
//! checks): cargo sets CARGO_BIN_EXE_agora only for tests of the
//! package that defines the binary, so that is where the binary's path is
//! known without guessing target directories.
