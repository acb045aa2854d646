//! The legacy shim's event publisher: every event is one run of
//! `<containerd-binary> --address <address> publish --topic <topic> --namespace <ns>` with the
//! protobuf `Any` of the event on stdin (containerd's own `publish` subcommand forwards it to
//! its events service). This is how containerd 1.x's v1 runtime expects `containerd-shim` to
//! report exits (protocols.md 4.3).
//!
//! Delivery: one queue, one delivery task, so events go out in publish order. Each attempt has a
//! deadline; a failed attempt is retried in place a bounded number of times with backoff (which
//! bridges a short containerd restart), then the event is dropped and logged.
//!
//! The publish child is started through the one [`Spawner`] (its exit reaches us, not the
//! reaper's orphan path) but *without* `PR_SET_PDEATHSIG`: containerd SIGKILLs a v1 shim right
//! after `Delete`, and an exit event still on its way must not die with the shim.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::queue::{self, Queued, Receiver};
use super::Publisher;
use crate::reaper::Spawner;

/// How one `publish` run is made and retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Deadline of one run (the Go shim waits 30 s).
    pub attempt_timeout: Duration,
    /// Runs per event, the first included.
    pub attempts: u32,
    /// Pause before the second run; doubled for each further one, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        // `containerd publish` gives up dialing after 2 s, so 6 runs spread over ~8 s of
        // backoff cover a containerd restart of 15-20 s.
        Retry {
            attempt_timeout: Duration::from_secs(30),
            attempts: 6,
            backoff: Duration::from_millis(250),
            backoff_max: Duration::from_secs(4),
        }
    }
}

/// Output kept from a failed run, for the log.
const OUTPUT_CAP: usize = 4096;

/// What the publisher runs.
#[derive(Debug, Clone)]
pub struct PublishCommand {
    /// `-containerd-binary` (default `containerd`, looked up in PATH).
    pub binary: String,
    /// containerd's gRPC address (`-address`).
    pub address: String,
    pub namespace: String,
}

/// Start publishing by running containerd's `publish` subcommand per event. Call inside
/// the runtime.
pub fn start_exec(spawner: Spawner, cmd: PublishCommand, retry: Retry) -> Arc<Publisher> {
    let (queue, rx) = queue::queue();
    tokio::spawn(deliver(spawner, cmd, retry, rx));
    Arc::new(Publisher { queue })
}

async fn deliver(spawner: Spawner, cmd: PublishCommand, retry: Retry, mut rx: Receiver) {
    while let Some(q) = rx.next().await {
        let mut backoff = retry.backoff;
        for attempt in 1..=retry.attempts.max(1) {
            match publish_once(&spawner, &cmd, &q, retry.attempt_timeout).await {
                Ok(()) => {
                    tracing::debug!(topic = %q.topic, attempt, "event published");
                    break;
                }
                Err(e) if attempt < retry.attempts => {
                    tracing::warn!(topic = %q.topic, attempt, error = %e, "publishing event failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(retry.backoff_max);
                }
                Err(e) => {
                    tracing::error!(topic = %q.topic, attempt, error = %e, "publishing event failed; event dropped");
                }
            }
        }
        rx.done();
    }
}

/// Why one `containerd publish` attempt failed (logged; the attempt is retried, and the
/// event dropped after the last).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("encode event: {0}")]
    Encode(protobuf::Error),
    #[error("create output pipe: {0}")]
    Pipe(nix::Error),
    #[error("create output pipe: {0}")]
    ClonePipe(std::io::Error),
    #[error("run {binary} publish: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Wait(std::io::Error),
    #[error("{binary} publish did not finish within {secs}s")]
    Timeout { binary: String, secs: u64 },
    #[error("{binary} publish exited with status {status}: {output}")]
    Exited {
        binary: String,
        status: u32,
        output: String,
    },
}

/// One run of `containerd publish`. stdout and stderr share one pipe, as the Go shim collects
/// them into one buffer for its error message.
async fn publish_once(
    spawner: &Spawner,
    cmd: &PublishCommand,
    q: &Queued,
    deadline: Duration,
) -> Result<(), PublishError> {
    let payload = q.event.write_to_bytes().map_err(PublishError::Encode)?;
    let (out_r, out_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(PublishError::Pipe)?;
    let out_w2 = out_w.try_clone().map_err(PublishError::ClonePipe)?;
    let mut c = Command::new(&cmd.binary);
    c.arg("--address")
        .arg(&cmd.address)
        .arg("publish")
        .arg("--topic")
        .arg(&q.topic)
        .arg("--namespace")
        .arg(&cmd.namespace)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2));
    // The Command (and with it our copies of the pipe's write end) is consumed by the spawn,
    // so the output read below ends when the child's copies close.
    let mut child = spawner
        .spawn(c, false)
        .map_err(|source| PublishError::Spawn {
            binary: cmd.binary.clone(),
            source,
        })?;
    let pid = child.pid;
    let stdin = child.stdin.take();
    let run = async move {
        feed(stdin, &payload).await;
        let output = read_capped(out_r).await;
        let exit = child.wait().await.map_err(PublishError::Wait)?;
        Ok::<_, PublishError>((exit.status, output))
    };
    let mut run = std::pin::pin!(run);
    let (status, output) = match tokio::time::timeout(deadline, &mut run).await {
        Ok(r) => r?,
        Err(_) => {
            // Still ours: its claim has not fired, so the pid cannot have been reused. The
            // exit is then collected like any other.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
            let _ = run.await;
            return Err(PublishError::Timeout {
                binary: cmd.binary.clone(),
                secs: deadline.as_secs(),
            });
        }
    };
    if status == 0 {
        return Ok(());
    }
    Err(PublishError::Exited {
        binary: cmd.binary.clone(),
        status,
        output: String::from_utf8_lossy(&output).trim().to_string(),
    })
}

/// Write the event and close stdin, so `publish` sees end of input. A child that exits without
/// reading is not an error here: its status tells.
async fn feed(stdin: Option<OwnedFd>, payload: &[u8]) {
    let Some(fd) = stdin else { return };
    if let Ok(mut tx) = pipe::Sender::from_owned_fd(fd) {
        let _ = tx.write_all(payload).await;
    }
}

async fn read_capped(fd: OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
        return out;
    };
    let mut buf = [0u8; 4096];
    while let Ok(n) = rx.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = OUTPUT_CAP.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::{Event, EventSink};
    use crate::protos::events::TaskExit;
    use crate::reaper::Reaper;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A fake `containerd`: records its argv and stdin per run, and fails the first
    /// `$dir/fail` runs.
    const FAKE: &str = r#"#!/bin/sh
dir=$(dirname "$0")
n=$(cat "$dir/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$dir/count"
fail=$(cat "$dir/fail" 2>/dev/null || echo 0)
if [ "$n" -le "$fail" ]; then echo "ctr: connection refused" >&2; exit 1; fi
printf '%s\n' "$@" > "$dir/argv.$n"
cat > "$dir/stdin.$n"
exit 0
"#;

    fn fake(dir: &std::path::Path, fail: u32) -> PublishCommand {
        let bin = dir.join("containerd");
        std::fs::write(&bin, FAKE).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("fail"), fail.to_string()).unwrap();
        PublishCommand {
            binary: bin.display().to_string(),
            address: "/run/ctd.sock".into(),
            namespace: "ns1".into(),
        }
    }

    fn exit(pid: u32) -> Event {
        Event::Exit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid,
            exit_status: 137,
            exited_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn quick() -> Retry {
        Retry {
            attempt_timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_millis(10),
            backoff_max: Duration::from_millis(20),
        }
    }

    /// The reaper of these tests polls only claimed pids, so it never steals the statuses of
    /// other tests' children in this process.
    fn spawner() -> Spawner {
        let r = Reaper::new();
        r.start_polling_thread(Duration::from_millis(5)).unwrap();
        Spawner::new(r)
    }

    #[tokio::test]
    async fn runs_containerd_publish_in_order_with_the_any_on_stdin() {
        let d = tempfile::tempdir().unwrap();
        let p = start_exec(spawner(), fake(d.path(), 0), quick());
        p.publish(exit(10));
        p.publish(exit(11));
        assert!(p.flush(Duration::from_secs(20)).await);
        let argv = std::fs::read_to_string(d.path().join("argv.1")).unwrap();
        assert_eq!(
            argv.lines().collect::<Vec<_>>(),
            [
                "--address",
                "/run/ctd.sock",
                "publish",
                "--topic",
                "/tasks/exit",
                "--namespace",
                "ns1"
            ]
        );
        for (n, pid) in [(1, 10), (2, 11)] {
            let stdin = std::fs::read(d.path().join(format!("stdin.{n}"))).unwrap();
            let any = crate::protos::Any::parse_from_bytes(&stdin).unwrap();
            assert_eq!(any.type_url, "containerd.events.TaskExit");
            let m = TaskExit::parse_from_bytes(&any.value).unwrap();
            assert_eq!((m.pid, m.exit_status, m.id.as_str()), (pid, 137, "c1"));
        }
    }

    #[tokio::test]
    async fn failures_are_retried_then_given_up() {
        let d = tempfile::tempdir().unwrap();
        let p = start_exec(spawner(), fake(d.path(), 2), quick());
        p.publish(exit(20));
        assert!(p.flush(Duration::from_secs(20)).await);
        // Two refused runs, the third delivered.
        assert!(d.path().join("stdin.3").exists());

        let d = tempfile::tempdir().unwrap();
        let p = start_exec(spawner(), fake(d.path(), 100), quick());
        let t0 = SystemTime::now();
        p.publish(exit(21));
        p.publish(exit(22));
        assert!(p.flush(Duration::from_secs(20)).await);
        // Bounded: three runs per event, and the queue moves on.
        assert_eq!(
            std::fs::read_to_string(d.path().join("count"))
                .unwrap()
                .trim(),
            "6"
        );
        assert!(t0.elapsed().unwrap() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_hung_run_is_killed_at_its_deadline() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("containerd");
        std::fs::write(&bin, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cmd = PublishCommand {
            binary: bin.display().to_string(),
            address: "a".into(),
            namespace: "n".into(),
        };
        let retry = Retry {
            attempt_timeout: Duration::from_millis(300),
            attempts: 1,
            ..quick()
        };
        let p = start_exec(spawner(), cmd, retry);
        p.publish(exit(30));
        assert!(p.flush(Duration::from_secs(10)).await);
    }
}
