//! Fault scenario 6 of issue 12 (docs/RELIABILITY.md): packet loss on every
//! link of real agents in network namespaces. Placement continues, slower;
//! no invariant breaks. Delay needs tc netem, which this kernel may lack:
//! the test says so and goes on with loss alone.

mod common;

use common::netns::{FaultCluster, Recorder, is_terminal};
use common::wait_for;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(25);

#[test]
fn placement_goes_on_under_ten_to_thirty_percent_loss() {
    let Some(mut c) = FaultCluster::start(4, 8, &[]) else {
        return;
    };
    if let Err(why) = c.delay(20) {
        eprintln!("NOTE: {why}");
    }
    let mut a = Recorder::connect(&c.nodes[0], "lossy-a");
    let mut b = Recorder::connect(&c.nodes[2], "lossy-b");
    for pct in [0u8, 10, 30] {
        c.loss(pct);
        let t0 = Instant::now();
        let mut ta = Vec::new();
        let mut tb = Vec::new();
        for wave in 0..3 {
            ta.extend(
                a.submit(&format!("l{pct}w{wave}"), 4, &["sleep", "1"])
                    .unwrap(),
            );
            tb.extend(
                b.submit(&format!("l{pct}w{wave}"), 4, &["sleep", "1"])
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_secs(1));
            c.assert_invariants(&format!("wave {wave} at {pct}% loss"), &[&a, &b], SETTLE);
        }
        wait_for(
            &format!("every task to end at {pct}% loss"),
            Duration::from_secs(300),
            || {
                [(&a, &ta), (&b, &tb)]
                    .iter()
                    .all(|(f, ts)| {
                        let l = f.latest();
                        ts.iter()
                            .all(|t| l.get(t).is_some_and(|s| is_terminal(&s.state)))
                    })
                    .then_some(())
            },
        );
        let took = t0.elapsed();
        // Where the time went: the slowest tasks' first and last news.
        let mut slow: Vec<(f64, String, String)> = Vec::new();
        for (f, ts) in [(&a, &ta), (&b, &tb)] {
            let told = f.told();
            for t in ts.iter() {
                if let Some(v) = told.get(t) {
                    let end = v.iter().find(|s| is_terminal(&s.state)).map(|s| s.at);
                    let first = v.first().map(|s| s.at);
                    if let (Some(e), Some(fi)) = (end, first) {
                        let states: Vec<String> = v
                            .iter()
                            .map(|s| {
                                format!("{}@{:.1}", s.state, s.at.duration_since(t0).as_secs_f64())
                            })
                            .collect();
                        slow.push((
                            e.duration_since(t0).as_secs_f64(),
                            t.clone(),
                            format!(
                                "{states:?} first {:.1}",
                                fi.duration_since(t0).as_secs_f64()
                            ),
                        ));
                    }
                }
            }
        }
        slow.sort_by(|x, y| y.0.total_cmp(&x.0));
        for s in slow.iter().take(3) {
            println!("SLOW {pct}% {} {}", s.1, s.2);
        }
        let mut finished = 0;
        for (f, ts) in [(&a, &ta), (&b, &tb)] {
            let l = f.latest();
            finished += ts.iter().filter(|t| l[*t].state == "finished").count();
        }
        println!(
            "FIGURE loss_{pct}pct tasks=24 finished={finished} all_ended_s={:.2}",
            took.as_secs_f64()
        );
        c.assert_invariants(&format!("{pct}% loss"), &[&a, &b], SETTLE);
        // Under loss a node may be held dead for a moment; with no loss
        // every task must finish.
        if pct == 0 {
            assert_eq!(finished, 24, "{}", c.report());
        }
    }
    c.loss(0);
    std::thread::sleep(SETTLE);
    c.assert_end("the end", &[&a, &b], SETTLE);
}
