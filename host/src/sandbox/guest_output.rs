//! The guest's stdout and stderr, forwarded line by line to tracing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// One of the guest's output streams, labelled with its tenant.
#[derive(Clone)]
pub struct GuestOutput {
    tenant: Arc<str>,
    stream: &'static str,
}

impl GuestOutput {
    /// Output stream `stream` ("stdout" or "stderr") of `tenant`.
    pub fn new(tenant: Arc<str>, stream: &'static str) -> Self {
        GuestOutput { tenant, stream }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            out: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// A guest can write without newlines; a cap keeps one from growing the buffer forever.
const MAX_LINE: usize = 16 * 1024;

struct LineWriter {
    out: GuestOutput,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        if self.out.stream == "stderr" {
            tracing::warn!(target: "trustlog::guest", tenant = %self.out.tenant, stream = self.out.stream, "{}", text.trim_end());
        } else {
            tracing::info!(target: "trustlog::guest", tenant = %self.out.tenant, stream = self.out.stream, "{}", text.trim_end());
        }
    }

    fn flush_lines(&mut self, force: bool) {
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.emit(&line);
        }
        if (force || self.pending.len() >= MAX_LINE) && !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.pending.extend_from_slice(buf);
        this.flush_lines(false);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flush_lines(true);
        Poll::Ready(Ok(()))
    }
}
