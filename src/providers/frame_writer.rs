//! Frames written to a Unix socket from any thread, in order, without a hop to another
//! thread: a sender writes its frame itself when nothing is waiting, and a task on the
//! socket's runtime writes what the socket could not take at once. What waits is bounded
//! in bytes: a peer that stops reading closes the writer (every later send fails) instead
//! of growing the sender's memory without end.
//!
//! Closing — by [`FrameWriter::close`], a failed write or a peer past the bound — shuts the
//! socket down both ways, so both the peer and this side's reader see its end.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Notify;

/// Why a frame was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the socket is closed: {0}")]
    Closed(String),
}

/// Writes whole frames to one socket; cheap to share.
pub struct FrameWriter {
    socket: OwnedWriteHalf,
    state: Mutex<State>,
    /// Wakes the task that writes what waits.
    wake: Arc<Notify>,
    max_waiting: usize,
}

#[derive(Default)]
struct State {
    /// Frames the socket has not taken yet; the first may be partly written.
    waiting: VecDeque<Vec<u8>>,
    /// Bytes of the first waiting frame already written.
    offset: usize,
    waiting_bytes: usize,
    closed: Option<String>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FrameWriter {
    /// A writer for `socket`, with its task started on the current runtime (which must
    /// drive the socket). At most `max_waiting` bytes wait for a slow peer.
    pub fn start(socket: OwnedWriteHalf, max_waiting: usize) -> Arc<FrameWriter> {
        let wake = Arc::new(Notify::new());
        let writer = Arc::new(FrameWriter {
            socket,
            state: Mutex::new(State::default()),
            wake: wake.clone(),
            max_waiting,
        });
        tokio::spawn(write_waiting(Arc::downgrade(&writer), wake));
        writer
    }

    /// Sends one whole frame (see [`crate::util::frame::encode`]): written now if the socket
    /// takes it, otherwise queued behind the frames already waiting.
    pub fn send(&self, frame: Vec<u8>) -> Result<(), SendError> {
        let mut state = lock(&self.state);
        if let Some(why) = &state.closed {
            return Err(SendError::Closed(why.clone()));
        }
        let first = state.waiting.is_empty();
        state.waiting_bytes = state.waiting_bytes.saturating_add(frame.len());
        state.waiting.push_back(frame);
        // Nothing waits before it: the sender writes it now, as far as the socket takes it.
        if first {
            self.write_some(&mut state)
                .map_err(|e| SendError::Closed(e.to_string()))?;
        }
        if state.waiting.is_empty() {
            return Ok(());
        }
        if state.waiting_bytes > self.max_waiting {
            let why = format!("the peer does not read: {} bytes wait", state.waiting_bytes);
            self.shut(&mut state, &why);
            return Err(SendError::Closed(why));
        }
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Stops writing: what waits is dropped and every later send fails.
    pub fn close(&self, why: &str) {
        let mut state = lock(&self.state);
        self.shut(&mut state, why);
        drop(state);
        self.wake.notify_one();
    }

    /// Marks the writer closed (the first reason stays), drops what waits and shuts the
    /// socket down both ways.
    fn shut(&self, state: &mut State, why: &str) {
        if state.closed.is_none() {
            state.closed = Some(why.to_string());
        }
        state.waiting.clear();
        state.waiting_bytes = 0;
        let socket: &tokio::net::UnixStream = self.socket.as_ref();
        // SAFETY: shutdown of a descriptor this writer owns for as long as it lives.
        unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// Writes waiting frames until none waits (`true`) or the socket would block (`false`);
    /// a failed write closes the writer.
    fn write_some(&self, state: &mut State) -> io::Result<bool> {
        loop {
            if state.closed.is_some() {
                return Ok(true);
            }
            let offset = state.offset;
            let Some(front) = state.waiting.front() else {
                return Ok(true);
            };
            let (len, written) = (front.len(), self.socket.try_write(&front[offset..]));
            match written {
                Ok(n) => {
                    state.offset += n;
                    state.waiting_bytes -= n;
                    if state.offset == len {
                        state.waiting.pop_front();
                        state.offset = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.shut(state, &e.to_string());
                    return Err(e);
                }
            }
        }
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        // Ends the task: it finds the writer gone.
        self.wake.notify_one();
    }
}

/// The task that writes what the socket could not take at once; ends with the writer.
async fn write_waiting(writer: Weak<FrameWriter>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let Some(writer) = writer.upgrade() else {
                return;
            };
            let written = writer.write_some(&mut lock(&writer.state));
            match written {
                Ok(true) => break,
                Ok(false) => {
                    if writer.socket.writable().await.is_err() {
                        writer.close("the socket failed");
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn frames_from_many_threads_arrive_whole_and_in_each_senders_order() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_ra, wa) = a.into_split();
        let writer = FrameWriter::start(wa, 64 << 20);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..200u32 {
                        // Big enough that the socket buffer fills and frames wait.
                        let body = vec![t; 1000 + (i as usize % 7) * 3000];
                        let mut frame = (body.len() as u32 + 4).to_le_bytes().to_vec();
                        frame.extend_from_slice(&i.to_le_bytes());
                        frame.extend_from_slice(&body);
                        writer.send(frame).unwrap();
                    }
                })
            })
            .collect();
        let mut b = b;
        let mut next = [0u32; 4];
        for _ in 0..800 {
            let mut header = [0u8; 4];
            b.read_exact(&mut header).await.unwrap();
            let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
            b.read_exact(&mut body).await.unwrap();
            let i = u32::from_le_bytes(body[..4].try_into().unwrap());
            let t = body[4];
            assert!(body[4..].iter().all(|&x| x == t), "a frame was interleaved");
            assert_eq!(i, next[t as usize], "frames of one sender out of order");
            next[t as usize] += 1;
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(next, [200; 4]);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_closes_the_writer_at_its_bound() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let (_ra, wa) = a.into_split();
        let writer = FrameWriter::start(wa, 1 << 20);
        let mut sent = 0usize;
        let err = loop {
            match writer.send(vec![7u8; 64 << 10]) {
                Ok(()) => sent += 64 << 10,
                Err(e) => break e,
            }
            assert!(sent < 64 << 20, "the writer queued without a bound");
        };
        assert!(err.to_string().contains("does not read"), "{err}");
        assert!(writer.send(vec![1]).is_err());
    }
}
