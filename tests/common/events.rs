//! Watching containerd's event stream (`ctr events`) from a test: what the shims published,
//! as containerd re-broadcast it, in order.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{finish, run_cmd, spawn, Ctd};

/// One event: topic and the JSON ctr printed for it.
#[derive(Debug, Clone)]
pub struct Ev {
    pub topic: String,
    pub body: serde_json::Value,
    pub line: String,
}

impl Ev {
    pub fn str(&self, key: &str) -> &str {
        self.body.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }
    pub fn num(&self, key: &str) -> u64 {
        self.body.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
    }
}

static BARRIERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct Events {
    ns: String,
    seen: Arc<Mutex<String>>,
    child: Option<Child>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Events {
    /// Subscribe, and return once the subscription demonstrably receives events (a probe
    /// published through `containerd publish` came back).
    pub fn watch(c: &Ctd) -> Events {
        let mut child = spawn(
            c.ctr_cmd()
                .arg("events")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let mut out = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let probe = shimgate::protos::any_bare(&shimgate::protos::events::TaskPaused {
            container_id: "probe".into(),
            ..Default::default()
        })
        .and_then(|a| protobuf::Message::write_to_bytes(&a))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.lock().unwrap().contains("/probe") {
            let _ = run_cmd(
                Command::new(c.containerd_bin())
                    .arg("--address")
                    .arg(&c.addr)
                    .args(["publish", "--topic", "/probe", "--namespace", &c.ns]),
                Some(&probe),
                Duration::from_secs(10),
            );
            assert!(Instant::now() < deadline, "ctr events never subscribed");
            std::thread::sleep(Duration::from_millis(100));
        }
        Events {
            ns: c.ns.clone(),
            seen,
            child: Some(child),
            reader: Some(reader),
        }
    }

    /// Return once every event containerd had received before this call has reached this
    /// watcher: a probe published now comes back after all of them (containerd hands events
    /// to a subscriber in the order it received them). Counting after the publishers are gone
    /// (e.g. the shim exited) and this barrier counts everything they will ever publish, with
    /// no sleep that a slow machine could outlast.
    pub fn barrier(&self, c: &Ctd) {
        let n = BARRIERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let topic = format!("/barrier{n}");
        let probe = shimgate::protos::any_bare(&shimgate::protos::events::TaskPaused {
            container_id: format!("barrier{n}"),
            ..Default::default()
        })
        .and_then(|a| protobuf::Message::write_to_bytes(&a))
        .unwrap();
        let out = run_cmd(
            Command::new("containerd")
                .arg("--address")
                .arg(&c.addr)
                .args(["publish", "--topic", &topic, "--namespace", &c.ns]),
            Some(&probe),
            Duration::from_secs(10),
        );
        assert_eq!(out.code, 0, "publish the barrier: {}", out.brief());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.seen.lock().unwrap().contains(&topic) {
            assert!(
                Instant::now() < deadline,
                "the event barrier never came back"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every task event of our namespace so far, in arrival order.
    pub fn all(&self) -> Vec<Ev> {
        let text = self.seen.lock().unwrap().clone();
        let ns = format!(" {} ", self.ns);
        text.lines()
            .filter(|l| l.contains(&ns))
            .filter_map(|l| {
                let i = l.find(" /tasks/")?;
                let rest = &l[i + 1..];
                let (topic, json) = rest.split_once(' ').unwrap_or((rest, "{}"));
                Some(Ev {
                    topic: topic.to_string(),
                    body: serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
                    line: l.to_string(),
                })
            })
            .collect()
    }

    /// Events of `topic` whose container is `id`.
    pub fn of(&self, topic: &str, id: &str) -> Vec<Ev> {
        self.all()
            .into_iter()
            .filter(|e| e.topic == topic && e.str("container_id") == id)
            .collect()
    }

    /// Wait until `done` holds over the events (or panic with what was seen).
    pub fn wait_until(&self, what: &str, t: Duration, done: impl Fn(&[Ev]) -> bool) {
        let deadline = Instant::now() + t;
        loop {
            let all = self.all();
            if done(&all) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; events:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dump(&self) -> String {
        self.all()
            .iter()
            .map(|e| e.line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            // SAFETY: signalling the ctr this watcher started.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = finish(c, Duration::from_secs(5));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
