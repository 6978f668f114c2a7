//! Slow HTTP clients (slowloris: a request head sent a few bytes at a time,
//! never finished) used to be held 75 s and more, without limit (issue 12).
//! Now a head must arrive within the header timeout (10 s), at most 1,024
//! connections are served, and a new connection takes the slot of the
//! oldest one that has not sent a request yet: with 1,100 slow clients
//! connected, well-behaved requests are still answered, and every slow
//! client is cut off and counted.

mod common;
mod limits_support;
mod prom;

use common::wait_for;
use limits_support::{TOKEN, get, metric, one_node, raise_open_files};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn slow_clients_are_cut_off_and_well_behaved_requests_are_served_during_the_attack() {
    assert_eq!(agora_node::http::server::MAX_CONNECTIONS, 1024);
    assert_eq!(
        agora_node::http::server::HEADER_READ_TIMEOUT,
        Duration::from_secs(10)
    );
    if !raise_open_files(4096) {
        return;
    }
    let (_c, http) = one_node(&[]);
    assert_eq!(get(&http, "/api/v1/cluster").status, 200);

    // 1,100 clients that start a request and never finish its head.
    let mut slow: Vec<TcpStream> = (0..1100)
        .map(|i| {
            let mut s = TcpStream::connect(&http).unwrap();
            s.write_all(
                format!("GET /api/v1/cluster HTTP/1.1\r\nHost: {http}\r\nX-{i}: ").as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    // Well-behaved requests keep being answered meanwhile, while the slow
    // ones trickle a byte now and then.
    for round in 0..20 {
        let r = get(&http, "/api/v1/cluster");
        assert_eq!(
            r.status,
            200,
            "request {round} during the attack: {}",
            r.text()
        );
        for s in slow.iter_mut().skip(round * 50).take(50) {
            let _ = s.write_all(b"a");
        }
    }

    // Every slow client is closed: the oldest to make room, the others at
    // the header timeout. None is answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, s) in slow.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(n) => panic!(
                "slow client {i} got an answer: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => panic!("slow client {i} still open after 60 s ({e})"),
        }
    }
    assert_eq!(get(&http, "/api/v1/cluster").status, 200);
    let evicted = metric(&http, "agora_http_connections_evicted_total", &[]);
    let timed_out = metric(&http, "agora_http_header_timeouts_total", &[]);
    assert!(evicted >= 76.0, "{evicted} evicted");
    assert!(timed_out >= 1.0, "{timed_out} timed out");
    assert_eq!(
        evicted + timed_out,
        1100.0,
        "every slow client counted once"
    );
    wait_for(
        "the connection gauge to settle",
        Duration::from_secs(10),
        || (metric(&http, "agora_http_connections", &[]) <= 1.0).then_some(()),
    );
}

#[test]
fn when_every_slot_holds_a_client_that_sent_a_request_a_new_one_gets_503() {
    if !raise_open_files(4096) {
        return;
    }
    let (_c, http) = one_node(&[]);
    // 1,024 keep-alive clients that each sent a whole request.
    let mut held = Vec::new();
    for _ in 0..1024 {
        let mut s = TcpStream::connect(&http).unwrap();
        s.write_all(format!("GET /api/v1/cluster HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes())
            .unwrap();
        held.push(s);
    }
    // Read each answer's start, so that every one is past its request.
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
    }
    let mut extra = TcpStream::connect(&http).unwrap();
    extra
        .write_all(format!("GET /api/v1/cluster HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes())
        .unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("at most 1024 HTTP connections"), "{answer}");
    drop(held);
    wait_for("the node to serve again", Duration::from_secs(30), || {
        let auth = format!("Bearer {TOKEN}");
        common::http::request(
            &http,
            "GET",
            "/api/v1/cluster",
            &[("authorization", &auth)],
            None,
        )
        .ok()
        .filter(|r| r.status == 200)
    });
    assert!(metric(&http, "agora_http_connections_refused_total", &[]) >= 1.0);
}

#[test]
fn a_client_that_declares_a_body_and_stalls_gets_408_and_its_slot_back() {
    // Before, a client that sent a whole head declaring a body, then only
    // part of the body, held its connection (and a slot) for as long as it
    // stayed connected: 1,024 of them kept every other client out.
    assert_eq!(
        agora_node::http::server::BODY_READ_TIMEOUT,
        Duration::from_secs(10)
    );
    let (_c, http) = one_node(&[]);
    let mut s = TcpStream::connect(&http).unwrap();
    s.write_all(
        format!(
            "POST /api/v1/tasks HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"tasks\":"
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut answer = String::new();
    let read = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("did not arrive within 10 s"), "{answer}");
    assert!(
        read.is_ok(),
        "the connection stays open after the answer: {read:?}"
    );
    assert_eq!(metric(&http, "agora_http_body_timeouts_total", &[]), 1.0);
    assert_eq!(get(&http, "/api/v1/cluster").status, 200);
}
