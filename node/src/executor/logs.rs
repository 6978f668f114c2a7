//! Reading a task's captured stdout and stderr by byte range.
//!
//! Logs live in `DATA_DIR/sandboxes/TASK/stdout` and `.../stderr` and stay
//! there after the task ends, until the GC removes the sandbox (and for a
//! grace after [`super::Executor::forget`]), so `agora logs` works for
//! finished tasks. A read returns at most
//! [`MAX_LOG_CHUNK`] bytes; `eof` says whether it reached the end of the
//! file as it is now (a running task may write more).

use super::fsutil::Layout;
use agora_protocol::ids::TaskId;
use agora_protocol::wire::{LogChunk, LogStream, MAX_LOG_CHUNK};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// The file name of a stream in the sandbox.
pub(crate) fn file_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    }
}

/// Reads up to `max_bytes` (capped) of a task's stream from `offset`.
pub(crate) fn read(
    layout: &Layout,
    task_id: &TaskId,
    stream: LogStream,
    offset: u64,
    max_bytes: u32,
) -> LogChunk {
    let mut chunk = LogChunk {
        request_id: 0,
        task_id: task_id.clone(),
        data: Vec::new(),
        next_offset: offset,
        eof: false,
        error: None,
    };
    let sandbox = layout.sandbox(task_id.as_str());
    if !sandbox.is_dir() {
        chunk.error = Some(format!(
            "unknown task {task_id}: it has no sandbox on this node"
        ));
        return chunk;
    }
    let path = sandbox.join(file_name(stream));
    let result = (|| -> std::io::Result<(Vec<u8>, u64)> {
        let mut file = match File::open(&path) {
            Ok(f) => f,
            // Not created yet: the task has not started writing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if offset >= len {
            return Ok((Vec::new(), len));
        }
        let want = (len - offset).min(u64::from(max_bytes.min(MAX_LOG_CHUNK)));
        file.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut data)?;
        Ok((data, len))
    })();
    match result {
        Ok((data, len)) => {
            chunk.next_offset = offset + data.len() as u64;
            chunk.eof = chunk.next_offset >= len;
            chunk.data = data;
        }
        Err(e) => chunk.error = Some(format!("cannot read {}: {e}", path.display())),
    }
    chunk
}
