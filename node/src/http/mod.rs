//! HTTP API, web dashboard and Prometheus metrics (issue 5).
//!
//! INTERFACE CONTRACT between this module and the agent (node/src/agent,
//! written on the `nodecore` branch). This module owns everything below the
//! contract; the agent fills an [`ApiSnapshot`] watch, answers
//! [`ApiCommand`]s, and updates [`Metrics`].
