//! Pumps against real pipes, FIFOs and ptys (no root needed): byte-exact copies through the
//! splice path and the read/write fallback, drain-before-exit, and the lost-wake-up case of a
//! slow consumer behind a full FIFO.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A FIFO with a reader thread that collects everything until end of file, reading `chunk`
/// bytes at a time with `pause` between reads.
struct Consumer {
    dir: tempfile::TempDir,
    handle: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Consumer {
    fn new(chunk: usize, pause: Duration) -> (Consumer, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let p = path.clone();
        let handle = std::thread::spawn(move || {
            // Blocks until the shim side opens for writing, like a client's background open.
            let mut f = std::fs::File::open(&p).unwrap();
            let mut out = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => return out,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        });
        (
            Consumer {
                dir,
                handle: Some(handle),
            },
            path,
        )
    }

    fn collected(mut self) -> Vec<u8> {
        let v = self.handle.take().unwrap().join().unwrap();
        drop(self.dir);
        v
    }
}

/// Pump a fresh pipe into the output target `target` (`create`: as `file://`), feeding
/// `data` from a thread; returns once the pump ended, with what the writer's `write_all` said.
fn pump_through_target(target: &Path, create: bool, data: Vec<u8>) -> std::io::Result<()> {
    rt().block_on(async {
        let opened = open_output(target, create, &mut None, &Opening::default());
        let sink = sink(opened.unwrap()).unwrap();
        let (r, w) = fd::pipe().unwrap();
        let pump = spawn_pump(
            Arc::new(PollFd::new(r).unwrap()),
            sink,
            Mover::default(),
            true,
        );
        let writer = std::thread::spawn(move || std::fs::File::from(w).write_all(&data));
        tokio::time::timeout(Duration::from_secs(60), pump.task)
            .await
            .expect("pump finished")
            .unwrap();
        writer.join().unwrap()
    })
}

/// Run a pump from a fresh pipe into `target`, feeding `data` from a thread.
fn pump_through(target: &Path, data: Vec<u8>) {
    pump_through_target(target, false, data).unwrap();
}

#[test]
fn splice_path_is_byte_exact() {
    let data = pattern((8 << 20) + 13);
    let (c, path) = Consumer::new(64 * 1024, Duration::ZERO);
    pump_through(&path, data.clone());
    let got = c.collected();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

#[test]
fn slow_consumer_behind_a_full_fifo_does_not_stall_the_pump() {
    // Small reads with pauses keep the FIFO full most of the time: the case where a racy
    // readiness clear used to lose the wake-up and hang.
    let data = pattern(6 << 20);
    let (c, path) = Consumer::new(4096, Duration::from_micros(50));
    pump_through(&path, data.clone());
    assert!(c.collected() == data);
}

#[test]
fn regular_file_target_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.txt");
    std::fs::write(&path, b"before\n").unwrap();
    let data = pattern(3 << 20);
    pump_through(&path, data.clone());
    let got = std::fs::read(&path).unwrap();
    assert_eq!(&got[..7], b"before\n");
    assert!(got[7..] == data[..]);
}

#[test]
fn pty_source_falls_back_to_copying() {
    let pty = nix::pty::openpty(None, None).unwrap();
    // Raw mode on the slave so bytes pass unchanged.
    let mut t = nix::sys::termios::tcgetattr(pty.slave.as_fd()).unwrap();
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(pty.slave.as_fd(), nix::sys::termios::SetArg::TCSANOW, &t)
        .unwrap();
    let data = pattern(200_000);
    let (c, path) = Consumer::new(65536, Duration::ZERO);
    let d2 = data.clone();
    rt().block_on(async move {
        let sink =
            sink(open_output(&path, false, &mut None, &Opening::default()).unwrap()).unwrap();
        let pump = spawn_pump(
            Arc::new(PollFd::new(pty.master).unwrap()),
            sink,
            Mover::default(),
            true,
        );
        let slave = pty.slave;
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(slave);
            f.write_all(&d2).unwrap();
            // Closing the only slave makes the master read EIO: end of stream.
        });
        tokio::time::timeout(Duration::from_secs(30), pump.task)
            .await
            .expect("pump finished")
            .unwrap();
        writer.join().unwrap();
    });
    assert!(c.collected() == data);
}

#[test]
fn drain_moves_everything_buffered_while_the_writer_is_still_open() {
    // The process exited but a grandchild still holds the pipe: drain must deliver what is
    // buffered without waiting for end of file.
    let data = pattern(300_000);
    let (c, path) = Consumer::new(65536, Duration::ZERO);
    let (r, w) = fd::pipe().unwrap();
    fd::grow_pipe(r.as_fd(), 1 << 20);
    let mut wf = std::fs::File::from(w);
    wf.write_all(&data).unwrap();
    rt().block_on(async {
        let io = pumping_to(&path, r);
        tokio::time::timeout(Duration::from_secs(10), io.drain(Duration::from_secs(10)))
            .await
            .expect("drain returned");
        // Everything is in the FIFO or already read now; closing the IO ends the consumer.
        io.close(Duration::ZERO).await;
    });
    drop(wf);
    assert!(c.collected() == data);
}

#[test]
fn drain_gives_up_on_a_stalled_consumer_without_losing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (r, w) = fd::pipe().unwrap();
    fd::grow_pipe(r.as_fd(), 1 << 20);
    let data = pattern(900_000);
    let mut wf = std::fs::File::from(w);
    wf.write_all(&data).unwrap();
    rt().block_on(async {
        let io = ProcessIo::none();
        // Nobody reads the FIFO (only our keep-alive holds it): the pump fills it and waits.
        let sink =
            sink(open_output(&path, false, &mut None, &Opening::default()).unwrap()).unwrap();
        fd::grow_pipe(sink.as_fd(), 65536);
        lock(&io.live).pumps.push(spawn_pump(
            Arc::new(PollFd::new(r).unwrap()),
            sink,
            Mover::default(),
            true,
        ));
        let t = std::time::Instant::now();
        io.drain(Duration::from_millis(300)).await;
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "drain must be bounded"
        );
        // A reader arriving late still gets every byte, in order.
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::open(&path).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            v
        });
        drop(wf);
        tokio::time::sleep(Duration::from_millis(50)).await;
        io.close(Duration::from_secs(10)).await;
        let got = reader.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
    });
}

#[test]
fn freeze_and_thaw_across_runtimes_loses_no_byte() {
    // A live upgrade in miniature: pumps frozen in one runtime, the runtime torn down (as
    // execve would), the same descriptors adopted by a new runtime, copying resumes.
    let data = pattern(3 << 20);
    let (c, path) = Consumer::new(4096, Duration::from_micros(20));
    let (r, w) = fd::pipe().unwrap();
    let half = data.len() / 2;
    // The first half is written while runtime A pumps, the rest while runtime B does.
    let (go_on_tx, go_on_rx) = std::sync::mpsc::channel::<()>();
    let d2 = data.clone();
    let writer = std::thread::spawn(move || {
        let mut wf = std::fs::File::from(w);
        wf.write_all(&d2[..half]).unwrap();
        go_on_rx.recv().unwrap();
        wf.write_all(&d2[half..]).unwrap();
    });
    let snap = {
        let rt_a = rt();
        let snap = rt_a.block_on(async {
            let io = pumping_to(&path, r);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let frozen = io.freeze().await.unwrap();
            let snap = frozen.snap.clone();
            assert_eq!(snap.outputs.len(), 1);
            // As across execve: the descriptors stay open, their old owners vanish unseen.
            std::mem::forget(frozen);
            snap
        });
        drop(rt_a);
        snap
    };
    let rt_b = rt();
    rt_b.block_on(async {
        let reaper = crate::reaper::Reaper::new();
        let io = ProcessIo::thaw(&snap, &crate::reaper::Spawner::new(reaper)).unwrap();
        go_on_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), io.close(Duration::from_secs(30)))
            .await
            .unwrap();
        writer.join().unwrap();
    });
    let got = c.collected();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

/// A process IO with one output pump from `r` to the FIFO at `path` (inside a runtime).
fn pumping_to(path: &std::path::Path, r: OwnedFd) -> ProcessIo {
    let io = ProcessIo::none();
    let sink = sink(open_output(path, false, &mut None, &Opening::default()).unwrap()).unwrap();
    lock(&io.live).pumps.push(spawn_pump(
        Arc::new(PollFd::new(r).unwrap()),
        sink,
        Mover::default(),
        true,
    ));
    io
}

/// A file sink that refuses everything (/dev/full: ENOSPC): the pump keeps draining the
/// source (so the writer is neither blocked nor killed by a closed pipe), discarding.
#[test]
fn a_refusing_file_sink_is_drained_not_abandoned() {
    // Far more than the pipe holds: only possible if the pump keeps draining.
    pump_through_target(Path::new("/dev/full"), true, pattern(8 << 20))
        .expect("every byte was taken off the pipe");
}
