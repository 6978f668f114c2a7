//! Oversized input on every port the node listens on (issue 12): the
//! framework socket, the gossip UDP port, the node-to-node TCP port and
//! HTTP. Each is refused with a clear answer where the protocol has one,
//! counted on /metrics, and leaves the node serving. (A peer that has the
//! cluster key and sends an oversized peer frame is tested in
//! node/src/p2p/mod.rs, on real libp2p swarms.)

mod common;
mod limits_support;
mod prom;

use common::json::{closed, connect, error_code, json_client, read_frame};
use common::wait_for;
use limits_support::{get, metric, one_node};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

#[test]
fn oversized_input_on_every_port_is_refused_counted_and_the_node_stays_up() {
    let (c, http) = one_node(&[]);
    let node = &c.nodes[0];

    // The socket: a frame announcing 64 MiB, in a session and as a handshake.
    let mut s = json_client(&node.socket());
    s.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
    let _ = s.write_all(&[b'x'; 4096]);
    assert_eq!(error_code(&read_frame(&mut s).unwrap()), "frame_too_large");
    assert!(closed(&mut s));
    let mut h = connect(&node.socket());
    h.write_all(&(2u32 << 20).to_be_bytes()).unwrap();
    let answer = read_frame(&mut h).unwrap();
    assert_eq!(error_code(&answer), "frame_too_large", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1048576"),
        "{answer}"
    );
    assert_eq!(
        metric(&http, "agora_frames_too_large_total", &[("port", "socket")]),
        2.0
    );

    // Gossip: the largest datagrams UDP over IPv4 carries, of garbage, one
    // per poll (a burst would overflow the socket's receive buffer, and
    // the kernel would drop most of it before the node sees it).
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage = vec![0xA5u8; 65_507];
    wait_for("5 rejected datagrams", Duration::from_secs(30), || {
        udp.send_to(&garbage, node.addr()).unwrap();
        (metric(&http, "agora_gossip_rejected_datagrams_total", &[]) >= 5.0).then_some(())
    });

    // The node-to-node port: a client without the key that sends a huge
    // length and 8 MiB.
    let p2p = format!("127.0.0.1:{}", node.port + 1);
    let mut t = TcpStream::connect(&p2p).unwrap();
    let _ = t.write_all(&u32::MAX.to_be_bytes());
    let _ = t.write_all(&vec![0x5Au8; 8 << 20]);
    wait_for("a failed peer handshake", Duration::from_secs(30), || {
        (metric(&http, "agora_peer_handshake_failures_total", &[]) >= 1.0).then_some(())
    });
    drop(t);
    assert!(
        node.log().contains("failed their handshake"),
        "{}",
        node.log()
    );

    // HTTP: a request head with a 1 MB header.
    let mut big = TcpStream::connect(&http).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "GET /api/v1/cluster HTTP/1.1\r\nHost: {http}\r\nX-Big: {}\r\n\r\n",
        "b".repeat(1 << 20)
    );
    let _ = big.write_all(head.as_bytes());
    let mut status = [0u8; 12];
    big.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 431");
    drop(big);
    wait_for("the 431 to be counted", Duration::from_secs(10), || {
        (metric(&http, "agora_frames_too_large_total", &[("port", "http")]) >= 1.0).then_some(())
    });

    // Everything still serves.
    assert!(node.nodes().is_some());
    assert_eq!(get(&http, "/api/v1/cluster").status, 200);
    assert_eq!(node.alive(), std::slice::from_ref(&node.id));
}
