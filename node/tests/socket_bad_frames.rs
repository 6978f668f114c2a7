//! Garbage and oversized frames on the framework socket get an error and
//! close only that connection; the node keeps serving other clients. A
//! frame of exactly the maximum, or one that arrives a byte at a time, is
//! served.

mod common;

use common::json::{closed, connect, error_code, frame, json_client, read_frame};
use common::{Cluster, wait_for};
use std::io::Write;
use std::time::Duration;

#[test]
fn bad_frames_close_only_their_connection() {
    let cluster = Cluster::start(1);
    let sock = cluster.nodes[0].socket();
    let mut bystander = json_client(&sock);

    // A handshake that is not one.
    let mut a = connect(&sock);
    a.write_all(&frame(b"\x00\x01garbage")).unwrap();
    assert_eq!(error_code(&read_frame(&mut a).unwrap()), "bad_handshake");
    assert!(closed(&mut a));

    // A frame that is not JSON.
    let mut b = json_client(&sock);
    b.write_all(&frame(b"{not json")).unwrap();
    assert_eq!(error_code(&read_frame(&mut b).unwrap()), "bad_frame");
    assert!(closed(&mut b));

    // A frame announcing 2 MiB.
    let mut c = json_client(&sock);
    c.write_all(&(2u32 << 20).to_be_bytes()).unwrap();
    let _ = c.write_all(&[b'x'; 4096]);
    assert_eq!(error_code(&read_frame(&mut c).unwrap()), "frame_too_large");
    assert!(closed(&mut c));

    // An unregistered submit is refused but the connection stays.
    bystander
        .write_all(&frame(br#"{"submit":{"request_id":1,"tasks":[]}}"#))
        .unwrap();
    assert_eq!(
        error_code(&read_frame(&mut bystander).unwrap()),
        "not_registered"
    );

    // The earlier client and new ones are still served.
    bystander
        .write_all(&frame(br#"{"list_nodes":{"request_id":9}}"#))
        .unwrap();
    let nodes = read_frame(&mut bystander).unwrap();
    assert_eq!(nodes["nodes"]["request_id"], 9, "{nodes}");
    wait_for("a fresh client served", Duration::from_secs(10), || {
        cluster.nodes[0].nodes()
    });
}

#[test]
fn a_frame_in_tiny_writes_and_one_of_exactly_the_maximum_are_served() {
    let cluster = Cluster::start(1);
    let sock = cluster.nodes[0].socket();

    // The handshake and a request, one byte per write.
    let mut s = connect(&sock);
    let mut bytes = frame(b"agora/1 json");
    bytes.extend_from_slice(&frame(br#"{"list_nodes":{"request_id":1}}"#));
    for b in &bytes {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(read_frame(&mut s).unwrap().get("welcome").is_some());
    assert_eq!(read_frame(&mut s).unwrap()["nodes"]["request_id"], 1);

    // 1 MiB exactly: a request padded with spaces (JSON allows them).
    let max = 1 << 20;
    let mut padded = br#"{"list_nodes":{"request_id":2}}"#.to_vec();
    padded.resize(max, b' ');
    s.write_all(&frame(&padded)).unwrap();
    assert_eq!(read_frame(&mut s).unwrap()["nodes"]["request_id"], 2);

    // One byte more is too large, and closes that connection only.
    padded.push(b' ');
    s.write_all(&frame(&padded)).unwrap();
    assert_eq!(error_code(&read_frame(&mut s).unwrap()), "frame_too_large");
    assert!(closed(&mut s));
    let mut other = json_client(&sock);
    other
        .write_all(&frame(br#"{"list_nodes":{"request_id":3}}"#))
        .unwrap();
    assert_eq!(read_frame(&mut other).unwrap()["nodes"]["request_id"], 3);
}

#[test]
fn json_clients_get_log_chunks_that_fit_a_frame() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    // 300,000 bytes of 'x' (120): four characters per byte in JSON, so the
    // node's 256 KiB cap alone would make a frame of over 1 MiB.
    let out = node.cli(&[
        "run",
        "--",
        "sh",
        "-c",
        "head -c 300000 /dev/zero | tr '\\000' x",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_for("the task to finish", Duration::from_secs(30), || {
        node.ps()?
            .iter()
            .any(|r| r["id"] == id.as_str() && r["state"] == "finished")
            .then_some(())
    });
    let mut c = json_client(&node.socket());
    let mut data = Vec::new();
    let mut offset = 0u64;
    for request_id in 1..=4u64 {
        let ask = serde_json::json!({"read_log": {
            "request_id": request_id, "task_id": id, "stream": "stdout",
            "offset": offset, "max_bytes": 262_144}});
        c.write_all(&frame(ask.to_string().as_bytes())).unwrap();
        let answer = read_frame(&mut c).expect("an answer that fits a frame");
        let log = &answer["log"];
        assert!(log.is_object(), "{}", error_code(&answer));
        let chunk: Vec<u8> = serde_json::from_value(log["data"].clone()).unwrap();
        assert!(chunk.len() <= 192 * 1024, "{} bytes", chunk.len());
        data.extend_from_slice(&chunk);
        offset = log["next_offset"].as_u64().unwrap();
        if log["eof"] == true {
            break;
        }
    }
    assert_eq!(data.len(), 300_000);
    assert!(data.iter().all(|&b| b == b'x'));
}
