//! chitchat's phi-accrual failure detector, per (observer, subject) pair.

use super::Config;
use crate::engine::{Micros, SEC};

#[derive(Clone, Copy, Debug)]
pub(super) struct Fd {
    pub(super) last: Micros,
    pub(super) sum: f64,
    pub(super) n: u32,
    pub(super) dead: bool,
}

pub(super) fn report_heartbeat(fd: &mut Fd, now: Micros, cfg: &Config) {
    if fd.last != Micros::MAX {
        let interval = now.saturating_sub(fd.last) as f64 / SEC as f64;
        if interval <= cfg.max_interval_s {
            if fd.n >= cfg.window {
                fd.sum -= fd.sum / f64::from(fd.n);
            } else {
                fd.n += 1;
            }
            fd.sum += interval;
        }
    }
    fd.last = now;
}

pub(super) fn phi_alive(fd: &Fd, now: Micros, cfg: &Config) -> bool {
    if fd.n == 0 || fd.last == Micros::MAX {
        return false;
    }
    let mean =
        (fd.sum + cfg.prior_weight * cfg.prior_interval_s) / (f64::from(fd.n) + cfg.prior_weight);
    let elapsed = now.saturating_sub(fd.last) as f64 / SEC as f64;
    elapsed / mean <= cfg.phi_threshold
}
