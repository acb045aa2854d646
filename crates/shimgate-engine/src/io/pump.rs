//! The copy loops between a process's pipes and its targets: one task per stream (the moves
//! themselves are `fd::Mover`'s), taking drain and freeze requests between moves and, after a
//! drain into a FIFO, giving its reader the chance to take what was moved.

use super::*;

pub(super) fn spawn_pump(src: Arc<PollFd>, sink: Sink, mover: Mover, output: bool) -> Pump {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(pump(src, sink, mover, rx, output));
    Pump { ctl: tx, task }
}

/// Copy `src` to `sink` until end of stream: container output to a FIFO or file (`output`),
/// or a client's stdin FIFO into the container (the container's end is closed at end of file
/// when the pump drops it; a shared pty master stays open for output).
///
/// Between moves it takes requests: a drain (output only) moves everything that is in the
/// source right now, then acknowledges; a freeze hands the ends and any unwritten bytes back.
/// A move interrupted by a request loses nothing (see [`Mover`]).
pub(super) async fn pump(
    src: Arc<PollFd>,
    sink: Sink,
    mut mover: Mover,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    output: bool,
) {
    let mut ctl_open = true;
    loop {
        tokio::select! {
            biased;
            req = ctl.recv(), if ctl_open => match req {
                None => ctl_open = false,
                Some(Ctl::Freeze(reply)) => {
                    mover.settle(&src).await;
                    let pending = mover.take_pending();
                    let _ = reply.send(PumpParts { src, sink, pending });
                    return;
                }
                Some(Ctl::Drain(ack)) => {
                    let eof = loop {
                        match mover.step(&src, &sink, false).await {
                            Ok(Moved::Bytes(_)) => {}
                            Ok(Moved::Empty) => break false,
                            Ok(Moved::Eof) | Err(_) => break true,
                        }
                    };
                    if let Sink::Poll(fifo, _) = &sink {
                        wait_for_consumer(fifo).await;
                    }
                    let _ = ack.send(());
                    if eof {
                        return;
                    }
                }
            },
            r = mover.step(&src, &sink, true) => match r {
                Ok(Moved::Bytes(_)) | Ok(Moved::Empty) => {}
                Ok(Moved::Eof) => {
                    // The process side is done. Drains that come now wait for this pump to
                    // end, so let the reader take what is still in the FIFO first.
                    if let (true, Sink::Poll(fifo, _)) = (output, &sink) {
                        wait_for_consumer(fifo).await;
                    }
                    return;
                }
                Err(e) => {
                    if output {
                        tracing::warn!(error = %e, "copying container output stopped");
                    }
                    return;
                }
            },
        }
    }
}

/// After a drain moved everything into the FIFO, give the reader the chance to take it before
/// the exit goes out: some clients (containerd 1.6's, behind `ctr run`) close their FIFO
/// readers as soon as they see the exit, dropping whatever they had not read yet. Waits while
/// the reader makes progress; a reader that stops (or is gone: only our keep-alive holds the
/// FIFO) ends the wait after `STALL`. The caller bounds the whole drain anyway.
pub(super) async fn wait_for_consumer(fifo: &PollFd) {
    const STALL: Duration = Duration::from_millis(100);
    let mut level = fd::pending_bytes(fifo.as_fd());
    let mut last_progress = tokio::time::Instant::now();
    while level > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = fd::pending_bytes(fifo.as_fd());
        if now < level {
            last_progress = tokio::time::Instant::now();
        } else if last_progress.elapsed() > STALL {
            return;
        }
        level = now;
    }
}
