//! A raw JSON client of the framework socket: length-prefixed frames, the
//! `agora/1 json` handshake, and the error code of an answer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One frame: a big-endian u32 length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// The next frame as JSON (None on a closed stream or a timeout).
pub fn read_frame(s: &mut UnixStream) -> Option<serde_json::Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

/// A connection with a 10 s read timeout, before any handshake.
pub fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A connection that has done the JSON handshake and read the welcome.
pub fn json_client(path: &Path) -> UnixStream {
    let mut s = connect(path);
    s.write_all(&frame(b"agora/1 json")).unwrap();
    let welcome = read_frame(&mut s).unwrap();
    assert!(welcome.get("welcome").is_some(), "{welcome}");
    s
}

/// True when the node closed the connection.
pub fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// The `error.code` of an answer, or "".
pub fn error_code(v: &serde_json::Value) -> String {
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}
