//! One output stream of a command, read to the end in its own task and kept up to a cap, so
//! the command never blocks on a full pipe.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

pub(super) struct Capture {
    task: JoinHandle<()>,
    sink: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    fn push(&mut self, chunk: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.bytes.len());
        let kept = room.min(chunk.len());
        self.bytes.extend_from_slice(&chunk[..kept]);
        self.truncated |= kept < chunk.len();
    }
}

impl Capture {
    pub(super) fn spawn<R: AsyncRead + Unpin + Send + 'static>(
        reader: Option<R>,
        cap: usize,
    ) -> Capture {
        let sink = Arc::new(Mutex::new(Captured::default()));
        let task = tokio::spawn(read_capped(reader, cap, sink.clone()));
        Capture { task, sink }
    }

    /// Waits until the stream reaches its end (at most once to completion).
    pub(super) async fn wait(&mut self) {
        if !self.task.is_finished() {
            let _ = (&mut self.task).await;
        }
    }

    /// The captured text (lossy UTF-8) and whether it was truncated.
    pub(super) fn finish(self) -> (String, bool) {
        self.task.abort();
        let captured = std::mem::take(
            &mut *self
                .sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        (
            crate::providers::decode_lossy(&captured.bytes, captured.truncated),
            captured.truncated,
        )
    }
}

/// Reads to EOF, keeping at most `cap` bytes and discarding the rest.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    sink: Arc<Mutex<Captured>>,
) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(&buf[..n], cap),
        }
    }
}
