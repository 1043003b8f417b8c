//! Connection deadlines: a connection must send a request's head within the header-read
//! timeout and, between requests, send its next one within the idle timeout; one that does not
//! is closed. hyper's own `header_read_timeout` is not used: its timer also runs while a
//! keep-alive connection waits for its next request, so it cannot be told apart from an idle
//! timeout. Instead each connection's reads ([`Watched`]) and requests ([`Activity::busy`])
//! move it between three phases, and a watchdog ([`Activity::expired`]) closes it when its
//! phase's deadline passes. While a request is in flight there is no deadline here: the
//! request timeout (app.rs) bounds it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// `--header-read-timeout`, `--idle-timeout` and `--max-connections`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Why a connection was closed by its deadline: the `phase` label of
/// [`crate::metrics::CONNECTION_TIMEOUTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Headers,
    Idle,
}

impl Expired {
    pub fn label(self) -> &'static str {
        match self {
            Self::Headers => "headers",
            Self::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's head: since the accept, or since the first byte after `Idle`.
    Head,
    /// This many requests in flight.
    Busy(usize),
    /// No request in flight, nothing read since the last one ended.
    Idle,
}

/// What one connection is doing, shared by its reader, its service and its watchdog.
pub struct Activity {
    state: Mutex<(Phase, Instant)>,
    changed: Notify,
}

impl Activity {
    /// A connection just accepted: its head is due.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { state: Mutex::new((Phase::Head, Instant::now())), changed: Notify::new() })
    }

    fn set(&self, update: impl FnOnce(Phase) -> Option<Phase>) {
        let mut state = self.state.lock().expect("no panic while holding the phase");
        if let Some(next) = update(state.0) {
            *state = (next, Instant::now());
            // a stored permit when the watchdog is not waiting yet: no change is missed
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: after a pause, they start the next request's head.
    fn read_some(&self) {
        self.set(|phase| matches!(phase, Phase::Idle).then_some(Phase::Head));
    }

    /// A request reached the service; the connection is busy until the guard is dropped (its
    /// response is ready, or it was cancelled).
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.set(|phase| Some(Phase::Busy(if let Phase::Busy(n) = phase { n + 1 } else { 1 })));
        Busy(self.clone())
    }

    /// Completes when the connection's deadline passes; never while a request is in flight.
    pub async fn expired(&self, limits: &ConnectionLimits) -> Expired {
        loop {
            let (phase, since) = *self.state.lock().expect("no panic while holding the phase");
            let (deadline, why) = match phase {
                Phase::Head => (since + limits.header_read_timeout, Expired::Headers),
                Phase::Idle => (since + limits.idle_timeout, Expired::Idle),
                Phase::Busy(_) => {
                    self.changed.notified().await;
                    continue;
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    // the phase may have changed just before the deadline: read it again
                    if let (Phase::Head | Phase::Idle, at) = *self.state.lock().expect("no panic") {
                        if at == since {
                            return why;
                        }
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}

/// A request in flight on its connection.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(|phase| match phase {
            Phase::Busy(n) if n > 1 => Some(Phase::Busy(n - 1)),
            _ => Some(Phase::Idle),
        });
    }
}

/// A connection's I/O, telling its [`Activity`] when bytes arrive.
pub struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1,
    };

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_deadline_and_a_request_in_flight_has_none() {
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(activity.expired(&LIMITS).await, Expired::Headers);
        assert_eq!(start.elapsed(), LIMITS.header_read_timeout);

        let busy = activity.busy();
        let second = activity.busy();
        drop(busy);
        let waited = tokio::time::timeout(Duration::from_secs(3600), activity.expired(&LIMITS)).await;
        assert!(waited.is_err(), "no deadline while a request is in flight");
        drop(second);
        let idle_since = Instant::now();
        assert_eq!(activity.expired(&LIMITS).await, Expired::Idle);
        assert_eq!(idle_since.elapsed(), LIMITS.idle_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_after_a_pause_starts_the_header_deadline() {
        let activity = Activity::new();
        drop(activity.busy());
        let watchdog = {
            let activity = activity.clone();
            tokio::spawn(async move { (activity.expired(&LIMITS).await, Instant::now()) })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        activity.read_some();
        let head_since = Instant::now();
        let (why, at) = watchdog.await.unwrap();
        assert_eq!((why, at - head_since), (Expired::Headers, LIMITS.header_read_timeout));
    }
}
